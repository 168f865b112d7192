"""Forwarding methods (ip_vs_xmit.c): one module per method, one object per method.

``default_forwarders()`` is the registry the director uses: forwarding method number
(the low bits of a connection's flags, engine/model.py FWD_*) -> forwarder.  The
interface and the context forwarders work in are in forwarders/base.py.
"""

from __future__ import annotations

from pyvs.engine.model import FWD_BYPASS, FWD_DROUTE, FWD_LOCALNODE, FWD_MASQ, FWD_TUNNEL
from pyvs.forwarders.base import ForwardContext, Forwarder, PathMtu


def default_forwarders() -> dict[int, Forwarder]:
    """Forwarding method number (FWD_*) -> forwarder."""
    from pyvs.forwarders.bypass import Bypass
    from pyvs.forwarders.dr import DirectRoute
    from pyvs.forwarders.nat import Masquerade
    from pyvs.forwarders.tun import Tunnel

    masq = Masquerade()
    return {FWD_MASQ: masq, FWD_LOCALNODE: masq, FWD_DROUTE: DirectRoute(),
            FWD_TUNNEL: Tunnel(), FWD_BYPASS: Bypass()}


__all__ = ["ForwardContext", "Forwarder", "PathMtu", "default_forwarders"]
