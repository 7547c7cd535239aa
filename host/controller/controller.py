# SPDX-License-Identifier: BSD-2-Clause
"""The security controller: which engine holds each SA, and the filters that lead to it.

:class:`Controller` owns every engine of one or more devices (engines are
numbered globally, device after device). It implements the method of the claims
(CLAIMS.md, claim 7) in this order for every SA:

1. **allocate** an engine (round-robin, least SAs, least observed bytes, or the
   one the caller pins) and a free slot in it;
2. **notify the engine**: write the SA into the slot and read it back; every
   field but key and salt (which read as zero) must be what was written, or
   the slot is zeroized again and the SA refused;
3. **notify the forwarders**: an inbound SA gets an SPI-table entry (SPI,
   destination, UDP encapsulation) -> (engine, slot) in *every* forwarder of
   its device, all or none; an outbound SA is reached through policies
   (:meth:`Controller.add_policy`), whose PROTECT value is its (engine, slot);
4. record it **active**.

Deleting goes the other way: the filters first (SPI entries removed, the
policies that protected with the SA turned to DISCARD, failing closed), then a
drain (a fence through every forwarder: every packet steered to the SA before
has left its engine), then DELETE, which zeroizes key and counters.

A move (:meth:`Controller.move_sa`) is the device's live migration over the
fabric: the destination slot put on hold, the source armed, every forwarder
paused and idle, the filters repointed, a fence through every forwarder, the
forwarders resumed; the engine exports the SA (key, sequence number, replay
window and counters) once the last fence has passed, and the destination reports
it on ``engine_migrated``. Packets for the SA that arrive meanwhile wait at the
hold, so none is lost and no sequence number is used twice.

Every step is written to the SA database (:mod:`.database`) before it is taken,
so :meth:`Controller.reconcile` can finish or undo what a crash cut short.

With several devices, an inbound SA's SPI entry goes into every forwarder of the
device that holds it (and no other), a PROTECT policy onto the ports of the
device that holds its SA, BYPASS and DISCARD policies onto every device's ports;
an SA moves only between engines of its device. A controller is driven from one
thread and is the only writer of its devices' SA slots and tables.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from ...hdl.engine.sa import SPI_MIN, SaConfig, SaState, sa_layout
from ...hdl.engine.sa_table import Event, control_layout, control_record
from ...hdl.forwarder.policy import PolicyAction
from ...hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus
from ..config import PolicySpec, SaSpec, policy_rule, spi_key
from .database import SaDatabase, SaRow

__all__ = ["Controller", "ControllerError", "Placement", "SaInfo", "LifetimeEvent",
           "ReconcileReport", "ALLOCATIONS", "inbound_key"]

#: Allocation policies :class:`Controller` knows.
ALLOCATIONS = ("round-robin", "least-sas", "least-bytes")

_SECRET = ("key", "salt")


class ControllerError(RuntimeError):
    """What the controller refused or could not do; the message says which SA and why."""


@dataclass(frozen=True)
class Placement:
    """Where an SA lives: device (index in the controller's list), engine of that
    device, slot of that engine."""
    device: int
    engine: int
    slot: int


@dataclass(frozen=True)
class SaInfo:
    """An SA as the controller knows it (no key, no salt)."""
    id: int
    spi: int
    dst: str | None
    direction: str
    state: str
    placement: Placement
    config: dict               # SaConfig fields but key and salt


@dataclass(frozen=True)
class LifetimeEvent:
    """A lifetime event of an engine and what the controller did about it:
    ``"rekey requested"`` (soft), ``"deleted"`` (hard), ``"ignored"`` (no SA known
    in that slot any more)."""
    kind: str                  # "soft" | "hard"
    placement: Placement
    sa: SaInfo | None
    action: str


@dataclass
class ReconcileReport:
    """What :meth:`Controller.reconcile` found and did; each list holds one line per SA
    or entry. ``consistent``: SAs found as recorded and left alone."""
    consistent: int = 0
    completed: list = field(default_factory=list)     # installs finished
    removed: list = field(default_factory=list)       # half-installed SAs taken out
    reinstalled: list = field(default_factory=list)   # from stored keys
    lost: list = field(default_factory=list)          # recorded, gone from the device
    moved: list = field(default_factory=list)         # moves finished
    deleted: list = field(default_factory=list)       # deletes finished
    filters: list = field(default_factory=list)       # filters put back or rewritten
    policies: list = field(default_factory=list)      # policies finished
    orphans: list = field(default_factory=list)       # in the device, not recorded
    notes: list = field(default_factory=list)

    @property
    def differences(self) -> list[str]:
        return [*self.completed, *self.removed, *self.reinstalled, *self.lost, *self.moved,
                *self.deleted, *self.filters, *self.policies, *self.orphans, *self.notes]

    def __str__(self):
        lines = [f"{self.consistent} SA(s) consistent"]
        lines += self.differences
        return "\n".join(lines)


def inbound_key(config: SaConfig) -> int:
    """The SPI-table key (:data:`~espnic.hdl.forwarder.spi_table.SPI_KEY` value) of
    inbound SA ``config``: its SPI, its destination in wire order, whether it is
    UDP-encapsulated (``host/config.py: spi_key``)."""
    return spi_key(config)


def _describe(spi: int, dst: str | None, direction: str) -> str:
    return f"SA {spi:#x} to {dst or 'any'} ({direction})"


def _row_name(row: SaRow) -> str:
    return _describe(row.spi, row.dst or None, row.direction)


# -- policy rules -----------------------------------------------------------------------

_RULE_DEFAULTS = {"valid": True, "ipv6": False, "priority": 0, "src": bytes(16), "src_len": 0,
                  "dst": bytes(16), "dst_len": 0, "any_proto": True, "proto": 0,
                  "sport_lo": 0, "sport_hi": 65535, "dport_lo": 0, "dport_hi": 65535,
                  "action": PolicyAction.DISCARD.value}


def _address(name: str, value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        if len(value) > 16:
            raise ValueError(f"policy field {name!r}: an address is at most 16 bytes")
        return bytes(value) + bytes(16 - len(value))
    if isinstance(value, str):
        try:
            packed = ipaddress.ip_address(value).packed
        except ValueError:
            raise ValueError(f"policy field {name!r}: not an address: {value!r}") from None
        return packed + bytes(16 - len(packed))
    if isinstance(value, int) and 0 <= value < 1 << 128:
        return value.to_bytes(16, "little")
    raise ValueError(f"policy field {name!r}: not an address: {value!r}")


def _action(value) -> int:
    if isinstance(value, PolicyAction):
        return value.value
    if isinstance(value, str):
        try:
            return PolicyAction[value.upper()].value
        except KeyError:
            pass
    elif isinstance(value, int) and value in {a.value for a in PolicyAction}:
        return value
    raise ValueError(f"policy field 'action': must be protect, bypass or discard, not {value!r}")


def normalize_rule(rule: dict) -> dict:
    """A policy rule (the policy table's ``WRITE`` rule fields; ``value`` left out, the
    controller fills it) with defaults filled in, addresses as 16 bytes in wire
    order and ``action`` as the :class:`PolicyAction` value."""
    unknown = set(rule) - set(_RULE_DEFAULTS) - {"value"}
    if unknown:
        raise ValueError(f"policy field {sorted(unknown)[0]!r}: unknown field (known: "
                         f"{', '.join(_RULE_DEFAULTS)})")
    fields = {**_RULE_DEFAULTS, **{k: v for k, v in rule.items() if k != "value"}}
    fields["src"], fields["dst"] = _address("src", fields["src"]), _address("dst", fields["dst"])
    fields["action"] = _action(fields["action"])
    for name in ("valid", "ipv6", "any_proto"):
        fields[name] = bool(fields[name])
    return fields


def _spec_rule(spec: PolicySpec) -> tuple[dict, int | None]:
    """A ``[[policy]]`` table's :class:`PolicySpec` as ``(rule, SPI of its SA)``."""
    if not isinstance(spec, PolicySpec):
        raise TypeError(f"a policy is a rule dict or a PolicySpec, not {type(spec).__name__}")
    return policy_rule(spec), spec.sa


# -- the controller -----------------------------------------------------------------------

class Controller:
    """The security controller of ``devices`` (see the module docstring).

    Parameters
    ----------
    devices : :class:`~espnic.host.device.Device` objects, in a fixed order (the
        database refers to them by position).
    db : path of the SQLite SA database (``None``: kept in memory only).
    allocation : ``"round-robin"``, ``"least-sas"`` or ``"least-bytes"`` (bytes the
        SAs on each engine have carried, read from their counters).
    store_keys : keep keys and salts in the database (see :mod:`.database` for why
        not by default and what they are used for).
    timeout : seconds to wait for the device's reports (fences, moves, idle).
    on_rekey : called with an :class:`SaInfo` and a reason (``"soft"``: a soft
        lifetime expired; ``"lost"``: the device lost the SA) when an SA needs new
        keys: the IKE module's hook.
    """

    def __init__(self, devices, *, db=None, allocation: str = "round-robin",
                 store_keys: bool = False, timeout: float = 5.0, on_rekey=None):
        devices = list(devices)
        if not devices:
            raise ValueError("a controller needs at least one device")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, "
                             f"not {allocation!r}")
        self.devices = devices
        self.allocation = allocation
        self.timeout = timeout
        self.on_rekey = on_rekey
        self.db = SaDatabase(db, store_keys=store_keys)
        self.db.check_devices([device.params for device in devices])
        self.engines = [(d, e) for d, device in enumerate(devices)
                        for e in range(device.params["engines"])]
        self._rr = len(self.db.sas()) % len(self.engines)
        self._events = deque()                 # (device, engine, slot, Event)
        self._migrated: set[tuple] = set()     # (device, engine, slot) reported moved in
        self._fenced = Counter()               # (device, engine, slot) -> fences passed
        self._bytes_base: dict[int, int] = {}  # SA id -> bytes at the last reset_load()
        #: Slots reconcile found holding SAs the database does not know, and kept:
        #: never allocated, so nothing is written over them.
        self._occupied: set[tuple] = set()
        #: Test seam: called with each step's name just after the step (a crash test
        #: raises from it to stop the controller where a SIGKILL could).
        self.step_hook = None

    def close(self):
        self.db.close()

    # -- helpers --------------------------------------------------------------------------

    def _step(self, name: str):
        if self.step_hook is not None:
            self.step_hook(name)

    def _params(self, d: int) -> dict:
        return self.devices[d].params

    def _forwarders(self, d: int) -> int:
        p = self._params(d)
        return p["ports"] + int(p["nested"])

    def _layout(self, d: int):
        return sa_layout(self._params(d)["window"])

    def _collect(self, d: int, wait: float = 0.0):
        """Take the device's pending items: events, fences and moves reported."""
        items = self.devices[d].items(wait=wait)
        while True:
            # items() hands over what it has dispatched, which may stop short of what
            # the link has received already: ask until it has nothing more.
            more = self.devices[d].items()
            if not more:
                break
            items += more
        for name, index, item in items:
            if name == "engine_events":
                self._events.append((d, index, int(item.slot), Event(item.event)))
            elif name == "engine_migrated":
                self._migrated.add((d, index, int(item.slot)))
            elif name == "engine_fenced":
                self._fenced[d, index, int(item.slot)] += 1
            # Replies nobody waits for any more (a request that timed out) are dropped.

    def _wait_for(self, d: int, done) -> bool:
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            self._collect(d, wait=0.05)
        return True

    def _config(self, row: SaRow) -> SaConfig:
        """The row's configuration; key and salt zero unless stored."""
        fields = dict(row.config)
        key_len = fields.pop("key_len")
        return SaConfig(**fields, key=row.key or "00" * key_len, salt=row.salt or "00" * 4)

    def _info(self, row: SaRow) -> SaInfo:
        config = {k: v for k, v in row.config.items() if k != "key_len"}
        return SaInfo(row.id, row.spi, row.dst or None, row.direction, row.state,
                      Placement(row.device, row.engine, row.slot), config)

    def _find(self, spi: int, dst: str | None = None, direction: str | None = None) -> SaRow:
        where = {"spi": spi}
        if dst is not None:
            where["dst"] = str(ipaddress.ip_address(dst))
        if direction is not None:
            where["direction"] = direction
        rows = self.db.sas(**where)
        if not rows:
            raise ControllerError(f"no SA with SPI {spi:#x}"
                                  + (f" to {dst}" if dst else "")
                                  + (f" ({direction})" if direction else ""))
        if len(rows) > 1:
            raise ControllerError(f"SPI {spi:#x} names {len(rows)} SAs ("
                                  + ", ".join(_row_name(r) for r in rows)
                                  + "): say which by destination and direction")
        return rows[0]

    def _engine(self, engine) -> tuple[int, int]:
        """A global engine index, or ``(device, engine)``, as ``(device, engine)``."""
        if isinstance(engine, tuple) and len(engine) == 2:
            d, e = engine
            if type(d) is int and type(e) is int and 0 <= d < len(self.devices) \
                    and 0 <= e < self._params(d)["engines"]:
                return d, e
        elif type(engine) is int and 0 <= engine < len(self.engines):
            return self.engines[engine]
        raise ControllerError(f"unknown engine {engine!r}: the controller has engines "
                              f"0..{len(self.engines) - 1} (or (device, engine) pairs)")

    def _free_slot(self, d: int, e: int) -> int | None:
        kept = {s for dd, ee, s in self._occupied if (dd, ee) == (d, e)}
        used = self.db.used_slots(d, e) | kept
        return next((s for s in range(self._params(d)["slots"]) if s not in used), None)

    def global_engine(self, d: int, e: int) -> int:
        return self.engines.index((d, e))

    # -- loads and allocation ---------------------------------------------------------------

    def _sa_bytes(self, row: SaRow) -> int:
        reply = self.devices[row.device].read_sa(row.engine, row.slot)
        return int(reply.counters.bytes) - self._bytes_base.get(row.id, 0)

    def engine_loads(self, by: str = "sas") -> dict[tuple, int]:
        """Each engine's load, ``(device, engine) -> load``: its SAs (``"sas"``) or the
        bytes they carried since :meth:`reset_load` (``"bytes"``, from their counters)."""
        if by not in ("sas", "bytes"):
            raise ValueError(f"by must be 'sas' or 'bytes', not {by!r}")
        loads = {engine: 0 for engine in self.engines}
        for row in self.db.sas():
            if row.state in ("active", "installing", "moving"):
                loads[row.device, row.engine] += 1 if by == "sas" else \
                    (self._sa_bytes(row) if row.state == "active" else 0)
        return loads

    def reset_load(self):
        """Count bytes from now on for ``"bytes"`` loads."""
        for row in self.db.sas(state="active"):
            self._bytes_base[row.id] = int(self.devices[row.device].read_sa(
                row.engine, row.slot).counters.bytes)

    def _allocate(self, device: int | None) -> tuple[int, int]:
        candidates = [(d, e) for d, e in self.engines if (device is None or d == device)
                      and self._free_slot(d, e) is not None]
        if not candidates:
            where = "any engine" if device is None else f"any engine of device {device}"
            raise ControllerError(f"no free SA slot on {where}")
        if self.allocation == "round-robin":
            n = len(self.engines)
            for step in range(n):
                engine = self.engines[(self._rr + step) % n]
                if engine in candidates:
                    self._rr = (self.engines.index(engine) + 1) % n
                    return engine
        loads = self.engine_loads("sas" if self.allocation == "least-sas" else "bytes")
        if self.allocation == "least-bytes":
            counts = self.engine_loads("sas")
            return min(candidates, key=lambda en: (loads[en], counts[en],
                                                   self.engines.index(en)))
        return min(candidates, key=lambda en: (loads[en], self.engines.index(en)))

    # -- device steps -----------------------------------------------------------------------

    def _verify(self, d: int, e: int, slot: int, record, name: str):
        """Read the slot back: every field but key and salt as written, counters clear."""
        layout = control_layout(self._params(d)["window"])
        written = control_record(record)
        reply = self.devices[d].read_sa(e, slot)
        differ = []
        for field_name, _ in layout:
            if field_name in _SECRET:
                continue
            want = layout[field_name].shape
            expected = data_bits(want, written[field_name])
            got = data_bits(want, reply.record[field_name])
            if expected != got:
                differ.append(field_name)
        if any(int(reply.counters[c]) for c, _ in reply.counters.shape()):
            differ.append("counters")
        if differ:
            raise ControllerError(f"{name}: engine {e} of device {d} slot {slot} reads back "
                                  f"differently from what was written ({', '.join(differ)}); "
                                  f"the slot was zeroized and the SA not installed")

    def _spi_all(self, d: int, op: SpiOp, key: int, e: int = 0, slot: int = 0) -> list:
        device = self.devices[d]
        return [_spi_entry(device, f, op, key, e, slot) for f in range(self._forwarders(d))]

    def _spi_insert(self, d: int, key: int, e: int, slot: int, name: str):
        """An SPI entry in every forwarder of device ``d``, or in none."""
        device, inserted = self.devices[d], []
        for f in range(self._forwarders(d)):
            status = _spi_entry(device, f, SpiOp.INSERT, key, e, slot)
            if status is SpiStatus.OK:
                inserted.append(f)
                continue
            for g in inserted:
                _spi_entry(device, g, SpiOp.REMOVE, key)
            why = ("it has an entry for this SPI and destination already (an SA this "
                   "controller does not know)" if status is SpiStatus.COLLISION else
                   "the SPI table's bucket for it is full")
            raise ControllerError(f"{name}: forwarder {f} of device {d} refused the SPI "
                                  f"entry: {why}; not installed")

    def _rule_write(self, rule: dict, value: tuple[int, int], *, valid: bool = True) -> dict:
        return {**rule, "valid": rule["valid"] and valid,
                "value": {"engine": value[0], "slot": value[1]}}

    def _write_policy(self, row, value, *, valid: bool = True):
        """Write policy ``row``'s rule with PROTECT value ``value`` on all its ports."""
        rule = self._rule_write(row.rule, value, valid=valid)
        for d, port in row.ports:
            if not self.devices[d].write_policy(port, row.index, rule):
                raise ControllerError(f"policy {row.id}: port {port} of device {d} refused "
                                      f"rule {row.index}")

    def _policy_value(self, policy) -> tuple[int, int]:
        if policy.sa is None:
            return (0, 0)
        sa = self.db.sa(policy.sa)
        return (sa.engine, sa.slot) if sa is not None else (0, 0)

    def _pause(self, d: int) -> int:
        """Pause every forwarder of device ``d`` and wait until each is idle; returns
        the ``pause`` value to restore."""
        device, mask = self.devices[d], (1 << self._forwarders(d)) - 1
        before = device.read("pause")
        device.write("pause", before | mask)
        deadline = time.monotonic() + self.timeout
        while device.read("idle") & mask != mask:
            if time.monotonic() >= deadline:
                device.write("pause", before)
                raise ControllerError(f"device {d}: forwarders not idle within "
                                      f"{self.timeout:g} s of pausing")
            time.sleep(0.001)
        return before

    def _drain(self, d: int, e: int, slot: int, name: str):
        """A fence through every forwarder for (e, slot); back once each has passed the
        engine: every packet steered to the slot before is through."""
        device, forwarders = self.devices[d], self._forwarders(d)
        key = (d, e, slot)
        self._collect(d)
        self._fenced[key] = 0
        for f in range(forwarders):
            device.send("fence_host", f, {"engine": e, "slot": slot})
        if not self._wait_for(d, lambda: self._fenced[key] >= forwarders):
            raise ControllerError(f"{name}: the drain's fences did not pass engine {e} of "
                                  f"device {d} within {self.timeout:g} s")
        del self._fenced[key]

    # -- SAs ----------------------------------------------------------------------------------

    def add_sa(self, config: SaConfig, engine=None, *, device: int | None = None) -> Placement:
        """Install SA ``config`` (an :class:`SaConfig`, or an ``SaSpec`` with ``config``
        and ``engine``): allocated (or on ``engine``: a global index or a
        ``(device, engine)`` pair; ``config.engine`` if it names one), written and
        verified, its filters pointing at it, recorded active. ``device``: allocate
        among that device's engines only. Nothing stays installed on an error."""
        if isinstance(config, SaSpec):
            engine = config.engine if engine is None else engine
            config = config.config
        if not isinstance(config, SaConfig):
            raise TypeError(f"config must be an SaConfig, not {type(config).__name__}")
        if not isinstance(config.spi, int) or config.spi < SPI_MIN:
            raise ControllerError(f"SA field 'spi': {config.spi!r} is reserved "
                                  f"(SPIs 0..{SPI_MIN - 1}, RFC 4303 section 2.1)")
        try:
            config = dataclasses.replace(config)         # validated again, normalised
        except ValueError as error:
            raise ControllerError(str(error)) from None
        inbound = config.direction == "in"
        name = _describe(config.spi, config.dst, config.direction)
        if inbound and config.dst is None:
            raise ControllerError(f"{name}: SA field 'dst': required for an inbound SA "
                                  f"(the forwarders match SPI and destination)")
        if self.db.sas(spi=config.spi, dst=config.dst or "", direction=config.direction):
            raise ControllerError(f"duplicate SPI: {name} is installed already")
        if engine is None and config.engine != "auto":
            engine = config.engine
        if engine is not None:
            d, e = self._engine(engine)
            if device is not None and d != device:
                raise ControllerError(f"{name}: engine {engine!r} is not on device {device}")
        else:
            if device is not None and not 0 <= device < len(self.devices):
                raise ControllerError(f"unknown device {device!r}: the controller has "
                                      f"devices 0..{len(self.devices) - 1}")
            d, e = self._allocate(device)
        slot = self._free_slot(d, e)
        if slot is None:
            raise ControllerError(f"{name}: engine {self.global_engine(d, e)} (device {d} "
                                  f"engine {e}) has no free slot")
        try:
            record = config.to_record(self._layout(d))
        except ValueError as error:
            raise ControllerError(f"{name}: {error}") from None
        stored = {k: v for k, v in dataclasses.asdict(config).items() if k not in _SECRET}
        stored["key_len"] = len(config.key_bytes)
        sa_id = self.db.add_sa(spi=config.spi, dst=config.dst or "", direction=config.direction,
                               config=stored, key=config.key, salt=config.salt,
                               device=d, engine=e, slot=slot)
        self._step("sa_recorded")
        try:
            self._install(d, e, slot, config, record, name)
        except Exception as error:
            try:
                self.devices[d].delete_sa(e, slot)
                self.db.remove_sa(sa_id)
            except Exception as undo:        # the device is gone: reconcile will do it
                error.add_note(f"not undone ({undo}); reconcile() will")
            raise
        self.db.set_sa(sa_id, state="active")
        self._step("sa_active")
        return Placement(d, e, slot)

    def _install(self, d, e, slot, config, record, name):
        self.devices[d].write_sa(e, slot, record)
        self._step("sa_written")
        self._verify(d, e, slot, record, name)
        self._step("sa_verified")
        if config.direction == "in":
            self._spi_insert(d, inbound_key(config), e, slot, name)
            self._step("spi_inserted")

    def delete_sa(self, spi: int, *, dst: str | None = None, direction: str | None = None):
        """Delete an SA: its filters, a drain, then DELETE (zeroized)."""
        row = self._find(spi, dst, direction)
        if row.state != "active":
            raise ControllerError(f"{_row_name(row)} is {row.state}: run reconcile() first")
        self._delete(row)

    def _delete(self, row: SaRow):
        self.db.set_sa(row.id, state="deleting")
        self._step("delete_recorded")
        self._remove_filters(row)
        self._step("delete_unfiltered")
        self._drain(row.device, row.engine, row.slot, _row_name(row))
        self.devices[row.device].delete_sa(row.engine, row.slot)
        self._step("delete_zeroized")
        self._bytes_base.pop(row.id, None)
        self.db.remove_sa(row.id)

    def _remove_filters(self, row: SaRow):
        if row.direction == "in":
            self._spi_all(row.device, SpiOp.REMOVE, inbound_key(self._config(row)))
            return
        for policy in self.db.policies(sa=row.id):
            # Fail closed: what the SA protected is discarded, not sent in clear.
            rule = {**policy.rule, "action": PolicyAction.DISCARD.value}
            self.db.set_policy(policy.id, rule=rule, sa=None, state="updating")
            self._write_policy(dataclasses.replace(policy, rule=rule), (0, 0))
            self.db.set_policy(policy.id, state="active")

    def _point_filters(self, row: SaRow, e: int, slot: int):
        """Point the SA's filters at (e, slot) of its device (REPLACE; missing SPI
        entries put in)."""
        if row.direction == "in":
            key = inbound_key(self._config(row))
            device = self.devices[row.device]
            for f in range(self._forwarders(row.device)):
                status = _spi_entry(device, f, SpiOp.REPLACE, key, e, slot)
                if status is SpiStatus.NOT_FOUND:
                    status = _spi_entry(device, f, SpiOp.INSERT, key, e, slot)
                if status is not SpiStatus.OK:
                    raise ControllerError(f"{_row_name(row)}: forwarder {f} of device "
                                          f"{row.device} refused its entry: {status.name}")
            return
        for policy in self.db.policies(sa=row.id):
            self._write_policy(policy, (e, slot))

    def move_sa(self, spi: int, engine, *, dst: str | None = None,
                direction: str | None = None) -> Placement:
        """Move an SA to ``engine`` (global index or ``(device, engine)``) of the same
        device, live, over the fabric (module docstring)."""
        row = self._find(spi, dst, direction)
        if row.state != "active":
            raise ControllerError(f"{_row_name(row)} is {row.state}: run reconcile() first")
        d, e = self._engine(engine)
        if d != row.device:
            raise ControllerError(f"not supported: moving {_row_name(row)} from device "
                                  f"{row.device} to device {d} (the fabric links the "
                                  f"engines of one device)")
        if e == row.engine:
            return Placement(d, e, row.slot)
        slot = self._free_slot(d, e)
        if slot is None:
            raise ControllerError(f"{_row_name(row)}: engine {self.global_engine(d, e)} has "
                                  f"no free slot")
        self.db.set_sa(row.id, state="moving", dest_engine=e, dest_slot=slot)
        self._step("move_recorded")
        self._migrate(row, e, slot)
        return Placement(d, e, slot)

    def _migrate(self, row: SaRow, e2: int, s2: int):
        """The device's live migration of ``row`` to (e2, s2) (nic_job's Migration)."""
        d, e, slot = row.device, row.engine, row.slot
        device, forwarders = self.devices[d], self._forwarders(d)
        self._migrated.discard((d, e2, s2))
        device.send("engine_hold", e2, {"slot": s2, "hold": 1})
        self._step("move_held")
        device.send("engine_arm", e, {"slot": slot, "engine": e2, "dest_slot": s2,
                                      "fences": forwarders})
        self._step("move_armed")
        before = self._pause(d)
        self._step("move_paused")
        self._point_filters(row, e2, s2)
        self._step("move_repointed")
        for f in range(forwarders):
            device.send("fence_host", f, {"engine": e, "slot": slot})
        self._step("move_fenced")
        device.write("pause", before)
        if not self._wait_for(d, lambda: (d, e2, s2) in self._migrated):
            raise ControllerError(f"{_row_name(row)}: engine {e2} of device {d} did not "
                                  f"report the move within {self.timeout:g} s; it stays "
                                  f"'moving': run reconcile()")
        self._migrated.discard((d, e2, s2))
        self._fenced.pop((d, e, slot), None)
        self.db.set_sa(row.id, engine=e2, slot=s2, state="active", dest_engine=None,
                       dest_slot=None)
        self._step("move_done")

    def rebalance(self, by: str = "sas") -> list[tuple[int, Placement, Placement]]:
        """Move SAs (:meth:`move_sa`) until no move between the most and the least
        loaded engine of a device makes their spread smaller. ``by``: SA count or
        bytes since :meth:`reset_load`. Returns ``(SA id, from, to)`` per move."""
        if by not in ("sas", "bytes"):
            raise ValueError(f"by must be 'sas' or 'bytes', not {by!r}")
        moves = []
        for d in range(len(self.devices)):
            rows = [row for row in self.db.sas(device=d) if row.state == "active"]
            weight = {row.id: 1 if by == "sas" else self._sa_bytes(row) for row in rows}
            engines = [e for dd, e in self.engines if dd == d]
            load = {e: 0 for e in engines}
            where = {}
            for row in rows:
                load[row.engine] += weight[row.id]
                where[row.id] = row
            while True:
                high = max(engines, key=lambda e: (load[e], -e))
                low = min(engines, key=lambda e: (load[e], e))
                spread = load[high] - load[low]
                if self._free_slot(d, low) is None:
                    break
                movable = [r for r in where.values() if r.engine == high
                           and 0 < weight[r.id] < spread]
                if not movable:
                    break
                best = min(movable, key=lambda r: (abs(spread - 2 * weight[r.id]), r.id))
                placement = self._move_row(best, low)
                moves.append((best.id, Placement(d, best.engine, best.slot), placement))
                load[high] -= weight[best.id]
                load[low] += weight[best.id]
                where[best.id] = self.db.sa(best.id)
        return moves

    def _move_row(self, row: SaRow, e: int) -> Placement:
        slot = self._free_slot(row.device, e)
        self.db.set_sa(row.id, state="moving", dest_engine=e, dest_slot=slot)
        self._step("move_recorded")
        self._migrate(row, e, slot)
        return Placement(row.device, e, slot)

    # -- lifetimes and rekeying ----------------------------------------------------------------

    def poll_events(self, *, wait: float = 0.0) -> list[LifetimeEvent]:
        """Handle the engines' lifetime events so far: soft -> :attr:`on_rekey`
        (``"soft"``), hard -> the SA deleted."""
        for d in range(len(self.devices)):
            self._collect(d, wait=wait if d == 0 else 0.0)
        handled = []
        while self._events:
            d, e, slot, event = self._events.popleft()
            placement = Placement(d, e, slot)
            rows = [r for r in self.db.sas(device=d, engine=e, slot=slot)
                    if r.state == "active"]
            kind = "soft" if event == Event.SOFT_EXPIRED else "hard"
            if not rows:
                handled.append(LifetimeEvent(kind, placement, None, "ignored"))
                continue
            row = rows[0]
            if kind == "soft":
                if self.on_rekey is not None:
                    self.on_rekey(self._info(row), "soft")
                handled.append(LifetimeEvent(kind, placement, self._info(row),
                                             "rekey requested"))
            else:
                self._delete(row)
                handled.append(LifetimeEvent(kind, placement, self._info(row), "deleted"))
        return handled

    def rekey(self, old_spi: int, new_config: SaConfig, *, dst: str | None = None) -> Placement:
        """Make-before-break replacement of one SA by ``new_config`` (same direction,
        on the same device): the new SA installed first; for an outbound SA every
        policy that protected with the old one repointed to the new one; then the
        old one deleted."""
        old = self._find(old_spi, dst, new_config.direction)
        if old.state != "active":
            raise ControllerError(f"{_row_name(old)} is {old.state}: run reconcile() first")
        placement = self.add_sa(new_config, device=old.device)
        if new_config.direction == "out":
            self._swap_policies(old, placement)
        self._delete(self.db.sa(old.id))
        return placement

    def rekey_child(self, old_in: int, new_in: SaConfig, old_out: int,
                    new_out: SaConfig, *, keep_old_inbound: bool = False,
                    switch_outbound: bool = True) -> tuple[Placement, Placement]:
        """An IKE CHILD_SA rekey: new inbound SA, new outbound SA, the policies swapped
        to it, old outbound deleted, old inbound deleted (in that order).

        ``keep_old_inbound``: leave the old inbound SA installed, for the caller to
        delete (:meth:`delete_sa`) once the peer no longer sends under it: the peer
        switches to the new SA only when it has handled the DELETE exchange, and
        its packets sent before may still be on their way (RFC 7296 section 2.8).
        ``switch_outbound=False``: the policies stay on the old outbound SA, for
        :meth:`switch_outbound` later (a rekey's responder: the initiator may not
        hold the new inbound SA before it has our response)."""
        inbound_old = self._find(old_in, direction="in")
        outbound_old = self._find(old_out, direction="out")
        placed_in = self.add_sa(new_in, device=inbound_old.device)
        placed_out = self.add_sa(new_out, device=outbound_old.device)
        if switch_outbound:
            self._swap_policies(outbound_old, placed_out)
            self._delete(self.db.sa(outbound_old.id))
        if not keep_old_inbound:
            self._delete(self.db.sa(inbound_old.id))
        return placed_in, placed_out

    def switch_outbound(self, old_out: int, new_out: int):
        """The policies that protect with outbound SA ``old_out`` protect with
        ``new_out`` from now on; then ``old_out`` is deleted (the second half of
        ``rekey_child(..., switch_outbound=False)``)."""
        old = self._find(old_out, direction="out")
        new = self._find(new_out, direction="out")
        if new.state != "active":
            raise ControllerError(f"{_row_name(new)} is {new.state}: run reconcile() first")
        self._swap_policies(old, Placement(new.device, new.engine, new.slot))
        self._delete(self.db.sa(old.id))

    def _swap_policies(self, old: SaRow, placement: Placement):
        new = next(r for r in self.db.sas(device=placement.device, engine=placement.engine,
                                          slot=placement.slot))
        for policy in self.db.policies(sa=old.id):
            self.db.set_policy(policy.id, sa=new.id, state="updating")
            self._write_policy(policy, (placement.engine, placement.slot))
            self.db.set_policy(policy.id, state="active")

    # -- policies ------------------------------------------------------------------------------

    def add_policy(self, rule, *, sa=None, port: int | None = None, index: int | None = None,
                   device: int | None = None) -> int:
        """Add an outbound policy; returns its id.

        ``rule``: the policy table's rule fields as a dict (:func:`normalize_rule`;
        ``action`` ``"protect"``, ``"bypass"`` or ``"discard"``), or a
        :class:`~espnic.host.config.PolicySpec` (a ``[[policy]]`` table). ``sa``: for
        PROTECT, the outbound SA's SPI (or ``(spi, dst)``); the rule's value becomes its (engine, slot) and follows
        it when it moves. Written to ``port`` or, by default, every port: of the
        SA's device for PROTECT, of ``device`` or every device otherwise. ``index``:
        the rule's index in those ports' tables (default: the lowest free in all)."""
        if not isinstance(rule, dict):
            rule, spec_sa = _spec_rule(rule)
            sa = spec_sa if sa is None else sa
        try:
            rule = normalize_rule(rule)
        except ValueError as error:
            raise ControllerError(str(error)) from None
        protect = rule["action"] == PolicyAction.PROTECT.value
        sa_row = None
        if protect:
            if sa is None:
                raise ControllerError("policy field 'sa': required for action protect")
            spi, dst = sa if isinstance(sa, tuple) else (sa, None)
            sa_row = self._find(spi, dst, "out")
            if sa_row.state != "active":
                raise ControllerError(f"{_row_name(sa_row)} is {sa_row.state}")
            if device is not None and device != sa_row.device:
                raise ControllerError(f"policy: {_row_name(sa_row)} is on device "
                                      f"{sa_row.device}, not {device}")
            devices = [sa_row.device]
        elif sa is not None:
            raise ControllerError("policy field 'sa': only for action protect")
        elif device is not None:
            if not 0 <= device < len(self.devices):
                raise ControllerError(f"unknown device {device!r}")
            devices = [device]
        else:
            devices = list(range(len(self.devices)))
        targets = []
        for d in devices:
            ports = self._params(d)["ports"]
            if port is not None and not (type(port) is int and 0 <= port < ports):
                raise ControllerError(f"unknown port {port!r}: device {d} has ports "
                                      f"0..{ports - 1}")
            targets += [(d, p) for p in (range(ports) if port is None else [port])]
        rules = min(self._params(d)["rules"] for d in devices)
        used = {p.index for p in self.db.policies() if set(p.ports) & set(targets)}
        if index is None:
            index = next((i for i in range(rules) if i not in used), None)
            if index is None:
                raise ControllerError("policy: no free rule index on those ports")
        elif not (type(index) is int and 0 <= index < rules):
            raise ControllerError(f"policy: index must be 0..{rules - 1}, not {index!r}")
        elif index in used:
            raise ControllerError(f"policy: rule index {index} is in use on those ports")
        policy_id = self.db.add_policy(ports=targets, index=index, rule=rule,
                                       sa=None if sa_row is None else sa_row.id)
        self._step("policy_recorded")
        policy = self.db.policy(policy_id)
        value = (0, 0) if sa_row is None else (sa_row.engine, sa_row.slot)
        try:
            self._write_policy(policy, value)
        except Exception as error:
            try:
                self._write_policy(policy, (0, 0), valid=False)
                self.db.remove_policy(policy_id)
            except Exception as undo:
                error.add_note(f"not undone ({undo}); reconcile() will")
            raise
        self.db.set_policy(policy_id, state="active")
        return policy_id

    def delete_policy(self, policy_id: int):
        policy = self.db.policy(policy_id)
        if policy is None:
            raise ControllerError(f"no policy {policy_id}")
        self.db.set_policy(policy_id, state="deleting")
        self._step("policy_deleting")
        self._write_policy(policy, (0, 0), valid=False)
        self.db.remove_policy(policy_id)

    def policies(self) -> list:
        return self.db.policies()

    # -- inspection ----------------------------------------------------------------------------

    def sas(self) -> list[SaInfo]:
        return [self._info(row) for row in self.db.sas()]

    def sa(self, spi: int, *, dst: str | None = None, direction: str | None = None) -> SaInfo:
        return self._info(self._find(spi, dst, direction))

    def sa_state(self, spi: int, *, dst: str | None = None, direction: str | None = None):
        """The SA's record (key and salt as zero) and counters as its engine has them."""
        row = self._find(spi, dst, direction)
        return self.devices[row.device].read_sa(row.engine, row.slot)

    # -- after a crash ------------------------------------------------------------------------

    def reconcile(self, *, orphans: str = "remove") -> ReconcileReport:
        """Make the devices and the database agree after a restart or a crash.

        Reads every slot of every engine back and, for each recorded SA by state:
        *installing*: completed if the engine holds it (its SPI entries put in),
        written again from a stored key if not, else removed (entries taken out,
        row dropped); *active*: left alone if the engine holds it (missing SPI
        entries put back), re-installed from a stored key (inbound only) or
        reported lost (filters removed, :attr:`on_rekey` told) if not; *moving*:
        the move finished (or redone from the start); *deleting*: the delete
        finished. Every policy is written again as recorded (the tables cannot
        be read back; an unchanged rule changes nothing a packet sees), those
        cut while being deleted are cleared. SAs the
        engines hold that the database does not know (``orphans``) are removed
        (``"remove"``) or only reported (``"keep"``). Forwarders left paused are
        resumed."""
        if orphans not in ("remove", "keep"):
            raise ValueError(f"orphans must be 'remove' or 'keep', not {orphans!r}")
        report = ReconcileReport()
        held = {}
        for d, device in enumerate(self.devices):
            self._collect(d)
            paused = device.read("pause")
            if paused:
                device.write("pause", 0)
                report.notes.append(f"device {d}: forwarders {paused:#x} were paused; resumed")
            for e in range(device.params["engines"]):
                for slot in range(device.params["slots"]):
                    reply = device.read_sa(e, slot)
                    if reply.record.state == SaState.VALID:
                        held[d, e, slot] = reply
        accounted = set()
        for row in self.db.sas():
            handler = getattr(self, f"_reconcile_{row.state}")
            handler(row, held, accounted, report)
        for policy in self.db.policies():
            if policy.state == "active":
                # The tables cannot be read back: write what the database says (a rule
                # written as it is changes nothing a packet sees; a device that lost
                # its tables gets them back).
                self._write_policy(policy, self._policy_value(policy))
                continue
            if policy.state == "deleting":
                self._write_policy(policy, (0, 0), valid=False)
                self.db.remove_policy(policy.id)
                report.policies.append(f"policy {policy.id}: delete finished")
                continue
            self._write_policy(policy, self._policy_value(policy))
            self.db.set_policy(policy.id, state="active")
            report.policies.append(f"policy {policy.id}: {policy.state} finished")
        self._occupied = set()
        for (d, e, slot), reply in sorted(held.items()):
            if (d, e, slot) in accounted:
                continue
            record = reply.record
            direction = "in" if int(record.direction.value if hasattr(record.direction, "value")
                                    else record.direction) == 0 else "out"
            what = (f"{_describe(int(record.spi), None, direction)} in device {d} engine {e} "
                    f"slot {slot}, not in the database")
            if orphans == "keep":
                report.orphans.append(what + ": kept")
                self._occupied.add((d, e, slot))
                continue
            if direction == "in":
                self._remove_orphan_entry(d, record)
            self._drain(d, e, slot, what)
            self.devices[d].delete_sa(e, slot)
            report.orphans.append(what + ": removed")
        return report

    def _holds(self, row: SaRow, reply) -> bool:
        """Whether a slot's read-back is this row's SA (every field but key, salt and
        the sequence number, which traffic moves, as recorded)."""
        if reply is None:
            return False
        layout = control_layout(self._params(row.device)["window"])
        expected = control_record(self._config(row).to_record(self._layout(row.device)))
        for name, _ in layout:
            if name in _SECRET or name == "seq":
                continue
            shape = layout[name].shape
            if data_bits(shape, expected[name]) != data_bits(shape, reply.record[name]):
                return False
        return True

    def _ensure_entries(self, row: SaRow, report) -> bool:
        """Every forwarder's SPI entry for an inbound ``row`` (REPLACE with the same
        value changes nothing a packet sees; a missing one is inserted)."""
        if row.direction != "in":
            return True
        key = inbound_key(self._config(row))
        device, fixed = self.devices[row.device], []
        for f in range(self._forwarders(row.device)):
            status = _spi_entry(device, f, SpiOp.REPLACE, key, row.engine, row.slot)
            if status is SpiStatus.NOT_FOUND:
                status = _spi_entry(device, f, SpiOp.INSERT, key, row.engine, row.slot)
                fixed.append(f)
            if status is not SpiStatus.OK:
                return False
        if fixed and row.state == "active":
            report.filters.append(f"{_row_name(row)}: SPI entry put back in forwarder(s) "
                                  f"{fixed} of device {row.device}")
        return True

    def _reconcile_active(self, row, held, accounted, report):
        where = (row.device, row.engine, row.slot)
        if self._holds(row, held.get(where)):
            accounted.add(where)
            self._ensure_entries(row, report)
            self._note_seq(row, held[where])
            report.consistent += 1
            return
        if row.direction == "in" and row.key is not None and where not in held:
            config = dataclasses.replace(self._config(row), seq=max(row.seq_seen,
                                                                   row.config["seq"]))
            record = config.to_record(self._layout(row.device))
            try:
                self.devices[row.device].write_sa(row.engine, row.slot, record)
                self._verify(row.device, row.engine, row.slot, record, _row_name(row))
                reinstalled = self._ensure_entries(row, ReconcileReport())
            except ControllerError:
                reinstalled = False
            if reinstalled:
                accounted.add(where)
                report.reinstalled.append(f"{_row_name(row)}: not in its engine; installed "
                                          f"again from the stored key (replay window from "
                                          f"sequence number {config.seq})")
                return
        self._forget(row, report.lost, "recorded active but not in its engine: lost")
        if self.on_rekey is not None:
            self.on_rekey(self._info(row), "lost")

    def _note_seq(self, row: SaRow, reply):
        """Keep an inbound SA's highest authenticated sequence number, with a stored
        key: where its replay window starts if it must be installed again."""
        if row.direction == "in" and row.key is not None and int(reply.record.seq) > row.seq_seen:
            self.db.set_sa(row.id, seq_seen=int(reply.record.seq))

    def checkpoint(self):
        """Record every inbound SA's sequence number (with stored keys only: see
        :meth:`reconcile`); call it now and then."""
        for row in self.db.sas(direction="in", state="active"):
            if row.key is not None:
                self._note_seq(row, self.devices[row.device].read_sa(row.engine, row.slot))

    def _forget(self, row, lines, why):
        """Take a recorded SA's filters out and drop its row (its slot is not its)."""
        self._remove_filters(row)
        self.db.remove_sa(row.id)
        lines.append(f"{_row_name(row)} (device {row.device} engine {row.engine} slot "
                     f"{row.slot}): {why}")

    def _reconcile_installing(self, row, held, accounted, report):
        where = (row.device, row.engine, row.slot)
        config = self._config(row)
        name = _row_name(row)
        if self._holds(row, held.get(where)):
            accounted.add(where)
            if self._ensure_entries(row, report):
                self.db.set_sa(row.id, state="active")
                report.completed.append(f"{name}: install finished")
                return
            self._spi_all(row.device, SpiOp.REMOVE, inbound_key(config))
            self.devices[row.device].delete_sa(row.engine, row.slot)
            self.db.remove_sa(row.id)
            report.removed.append(f"{name}: its SPI entries could not be put in; removed")
            return
        if row.key is not None and where not in held:
            record = config.to_record(self._layout(row.device))
            try:
                if row.direction == "in":    # entries of the cut install, if any
                    self._spi_all(row.device, SpiOp.REMOVE, inbound_key(config))
                self._install(row.device, row.engine, row.slot, config, record, name)
            except ControllerError:
                self.devices[row.device].delete_sa(row.engine, row.slot)
            else:
                accounted.add(where)
                self.db.set_sa(row.id, state="active")
                report.completed.append(f"{name}: installed from the stored key")
                return
        if row.direction == "in":
            self._spi_all(row.device, SpiOp.REMOVE, inbound_key(config))
        self.db.remove_sa(row.id)
        report.removed.append(f"{name}: install cut before the engine held it; removed "
                              f"(install it again)")

    def _reconcile_deleting(self, row, held, accounted, report):
        where = (row.device, row.engine, row.slot)
        self._remove_filters(row)
        if self._holds(row, held.get(where)):
            accounted.add(where)
            self._drain(*where, _row_name(row))
            self.devices[row.device].delete_sa(row.engine, row.slot)
        self.db.remove_sa(row.id)
        report.deleted.append(f"{_row_name(row)}: delete finished")

    def _reconcile_moving(self, row, held, accounted, report):
        source = (row.device, row.engine, row.slot)
        dest = (row.device, row.dest_engine, row.dest_slot)
        name = _row_name(row)
        if self._holds(row, held.get(dest)) and source not in held:
            accounted.add(dest)
            moved = dataclasses.replace(row, engine=row.dest_engine, slot=row.dest_slot)
            self._point_filters(moved, row.dest_engine, row.dest_slot)
            self.devices[row.device].send("engine_hold", row.dest_engine,
                                          {"slot": row.dest_slot, "hold": 0})
            self.db.set_sa(row.id, engine=row.dest_engine, slot=row.dest_slot,
                           state="active", dest_engine=None, dest_slot=None)
            report.moved.append(f"{name}: move to engine {row.dest_engine} had happened; "
                                f"filters pointed there")
            return
        if self._holds(row, held.get(source)):
            accounted.add(source)
            self._migrate(row, row.dest_engine, row.dest_slot)
            report.moved.append(f"{name}: move to engine {row.dest_engine} done again "
                                f"from the start")
            return
        self.devices[row.device].send("engine_hold", row.dest_engine,
                                      {"slot": row.dest_slot, "hold": 0})
        self._forget(row, report.lost, "was moving and is in neither slot: lost")
        if self.on_rekey is not None:
            self.on_rekey(self._info(row), "lost")

    def _remove_orphan_entry(self, d: int, record):
        """Take out the SPI entry an unknown inbound SA would have, unless a recorded
        SA has the same key."""
        version = int(record.tunnel.ip_version.value if hasattr(record.tunnel.ip_version, "value")
                      else record.tunnel.ip_version)
        if version not in (4, 6):
            return
        make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        dst = str(make(int(record.tunnel.dst)))
        udp = int(record.natt.encap.value if hasattr(record.natt.encap, "value")
                  else record.natt.encap)
        key = int(record.spi) | int.from_bytes(
            ipaddress.ip_address(dst).packed.ljust(16, b"\0"), "little") << 32 | udp << 160
        for row in self.db.sas(direction="in", device=d):
            if inbound_key(self._config(row)) == key:
                return
        self._spi_all(d, SpiOp.REMOVE, key)


def _spi_entry(device, forwarder: int, op: SpiOp, key: int, engine: int = 0,
               slot: int = 0) -> SpiStatus:
    """``Device.spi_entry`` with ``key`` as an int (the driver packs it as a layout
    initializer, which takes the key as a ``SPI_KEY`` constant, not its value)."""
    return device.spi_entry(forwarder, op, SPI_KEY.from_bits(key), engine, slot)


def data_bits(shape, value) -> int:
    """A field's value (a ``data.Const``, an enum member, an int) as its bits."""
    if hasattr(value, "as_bits"):
        return value.as_bits()
    if hasattr(value, "value") and not isinstance(value, int):
        return int(value.value)
    return int(value)
