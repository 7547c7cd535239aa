# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 (RFC 7296) for espnic: pre-shared keys, ESP AES-GCM-16 CHILD_SAs, rekey,
delete, liveness, NAT-T; negotiated CHILD_SAs go to the security controller.

Layers: :mod:`.message` (wire format), :mod:`.crypto` (keys, DH, SK payload),
:mod:`.proposals` (transforms and their strongSwan-style names), :mod:`.session`
(one IKE SA as a sans-IO state machine), :mod:`.daemon` (sockets, timers,
cookies, the controller), :mod:`.config` (the ``espnic ike`` TOML file).
"""

from .config import IkeConfig, PeerConfig, load_ike_config, parse_ike_config
from .daemon import IkeDaemon
from .session import ChildDown, ChildRekeyed, ChildRetired, ChildSwitched, ChildUp

__all__ = ["IkeConfig", "PeerConfig", "load_ike_config", "parse_ike_config", "IkeDaemon",
           "ChildUp", "ChildRekeyed", "ChildSwitched", "ChildRetired",
           "ChildDown"]
