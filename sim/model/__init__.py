# SPDX-License-Identifier: BSD-2-Clause
"""Reference data plane in Python on `cryptography`: the oracle of every hardware test.

:class:`EspModel` is one ESP engine (SA table as :mod:`espnic.hdl.engine.sa`
records, counters, events); :class:`ReplayWindow` is the RFC 4303 anti-replay
window. The forwarder, several engines and the register map come later.
"""

from .esp import DROP_COUNTERS, OUTER_TTL, EspModel, internet_checksum
from .replay import ReplayWindow

__all__ = ["EspModel", "ReplayWindow", "DROP_COUNTERS", "OUTER_TTL", "internet_checksum"]
