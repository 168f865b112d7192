"""What the director decides for each packet (shared by the director, ports, forwarders)."""

ACCEPT = 0  # not IPVS business: the director's own stack gets it unchanged
FORWARD = 1  # rewritten in place: send it on
DROP = 2  # swallowed (counted); anything to send instead went through an outbox
NAMES = ("accept", "forward", "drop")
