# SPDX-License-Identifier: BSD-2-Clause
"""The engine fabric (DESIGN.md section 3): engines hand each other SAs' live state.

:mod:`.link` is the message format and the link between engines; :mod:`.mover`
is each engine's end of it (export, import, hold) together with the engine's
host path.
"""

from .link import MAX_ENGINES, BeatKind, FabricLink, fabric_beat
from .mover import HOLD, MIGRATE_ARM, SaMover, slot_report

__all__ = ["MAX_ENGINES", "BeatKind", "FabricLink", "fabric_beat", "MIGRATE_ARM", "HOLD", "SaMover", "slot_report"]
