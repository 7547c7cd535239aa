# SPDX-License-Identifier: BSD-2-Clause
"""ESP engine: SA record (:mod:`.sa`), anti-replay windows (:mod:`.replay`); the
gateware ``EspEngine`` comes later (issue 3)."""

from .sa import (
    REPLAY_WINDOW, MIN_REPLAY_WINDOW, NATT_PORT, SPI_MIN,
    Direction, Mode, Encap, IpVersion, SaState,
    sa_layout, SA_RECORD, SA_LIFETIME, SA_TUNNEL, SA_NATT, SA_COUNTERS,
    SaConfig,
)
from .replay import ReplayVerdict, ReplayWindowUnit

__all__ = [
    "REPLAY_WINDOW", "MIN_REPLAY_WINDOW", "NATT_PORT", "SPI_MIN",
    "Direction", "Mode", "Encap", "IpVersion", "SaState",
    "sa_layout", "SA_RECORD", "SA_LIFETIME", "SA_TUNNEL", "SA_NATT", "SA_COUNTERS",
    "SaConfig",
    "ReplayVerdict", "ReplayWindowUnit",
]
