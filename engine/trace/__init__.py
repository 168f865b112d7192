"""`pyvs trace`: one packet's path through the director, in plain words.

The daemon side (hook.py) attaches to the running director only while someone traces
(Director.attach_tracer): it watches each packet that matches a subscriber's filter
(filter.py) go through ``Director.handle`` -- connection lookup, template, the
scheduler's choice and its inputs (explain.py), state and timer, the forwarding
method, the bytes before and after, or why the packet was dropped or passed to the
stack -- and streams one JSON event per packet over the control socket.  The client
side (client.py) turns events into words (words.py, with scapy's one-line summaries),
pcapng files of both sides (pcapng.py) and a ladder diagram (ladder.py, matplotlib).

Nothing here runs on the packet path while nobody traces; scapy and matplotlib are
imported by the client only.
"""
