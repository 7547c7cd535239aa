# SPDX-License-Identifier: BSD-2-Clause
"""The security controller (DESIGN.md section 5): SAs allocated to engines, the
forwarders' filters that lead to them, live moves, rekeying, lifetimes, and the
SA database reconciled with the devices after a restart."""

from .controller import (ALLOCATIONS, Controller, ControllerError, LifetimeEvent, Placement,
                         ReconcileReport, SaInfo, inbound_key, normalize_rule)
from .database import DatabaseError, SaDatabase

__all__ = ["ALLOCATIONS", "Controller", "ControllerError", "DatabaseError", "LifetimeEvent",
           "Placement", "ReconcileReport", "SaDatabase", "SaInfo", "inbound_key",
           "normalize_rule"]
