"""The lab kinds `pyvs lab up` builds, by name."""

from __future__ import annotations

from .natlab import NatLab
from .segment import DrLab
from .tunlab import TunLab

LABS = {"nat": NatLab, "dr": DrLab, "tun": TunLab}
