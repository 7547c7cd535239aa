# SPDX-License-Identifier: BSD-2-Clause
"""The security controller's SA database: SQLite, written ahead of the device.

Every change the controller makes to a device is first recorded here and
committed (the row's ``state`` says which step is under way), so that after a
crash :meth:`Controller.reconcile <espnic.host.controller.Controller.reconcile>`
knows what may be half done and can finish or undo it.

Tables:

* ``meta``: the database's settings (``store_keys``) and schema version;
* ``devices``: the devices the controller owns, in order, with their parameters
  (a database is refused for a different set of devices);
* ``sa``: one row per SA: its identity (SPI, destination, direction), its
  configuration as JSON (key and salt left out, see below), where it is (device,
  engine, slot), its ``state`` and, while it moves, where it is going;
* ``policy``: one row per outbound policy: the ports it is written to (as
  ``[device, port]`` pairs), its rule index, the rule's fields as JSON and the SA it protects with.

States of an SA: ``installing`` (the engine may hold it, a forwarder may point
at it), ``active``, ``moving`` (``dest_engine``/``dest_slot`` say where to),
``deleting`` (its filters may be gone, its slot not yet zeroized). Policies:
``installing``, ``active``, ``updating`` (being rewritten on every port),
``deleting``.

**Keys.** By default the database holds no key and no salt: the device keeps
them (write-only, zeroized on delete) and the IKE module can negotiate new ones,
while a key on disk outlives the SA (backups, freed pages). Keys are stored only
when the controller is opened with ``store_keys=True``; they are then used for
two things: to finish an SA whose install was cut before it reached the engine,
and to put an *inbound* SA back after a device lost its state. Outbound SAs are
never re-installed from a stored key, because the sequence number the engine
had reached is lost with it and starting again would reuse GCM nonces. With
stored keys SQLite's ``secure_delete`` is on, so a deleted key is overwritten in
the file. The file (and SQLite's journal files, which take its mode) is created
with mode 0600 and set to it when opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from dataclasses import dataclass

__all__ = ["SaDatabase", "SaRow", "PolicyRow", "DatabaseError"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (idx INTEGER PRIMARY KEY, params TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sa (
    id          INTEGER PRIMARY KEY,
    spi         INTEGER NOT NULL,
    dst         TEXT NOT NULL,
    direction   TEXT NOT NULL,
    config      TEXT NOT NULL,
    key         TEXT,
    salt        TEXT,
    device      INTEGER NOT NULL,
    engine      INTEGER NOT NULL,
    slot        INTEGER NOT NULL,
    state       TEXT NOT NULL,
    dest_engine INTEGER,
    dest_slot   INTEGER,
    seq_seen    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (spi, dst, direction)
);
CREATE INDEX IF NOT EXISTS sa_place ON sa (device, engine, slot);
CREATE TABLE IF NOT EXISTS policy (
    id     INTEGER PRIMARY KEY,
    ports  TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    rule   TEXT NOT NULL,
    sa     INTEGER,
    state  TEXT NOT NULL
);
"""


class DatabaseError(RuntimeError):
    pass


@dataclass(frozen=True)
class SaRow:
    id: int
    spi: int
    dst: str
    direction: str
    config: dict          # SaConfig fields but key and salt
    key: str | None
    salt: str | None
    device: int
    engine: int
    slot: int
    state: str
    dest_engine: int | None
    dest_slot: int | None
    seq_seen: int


@dataclass(frozen=True)
class PolicyRow:
    id: int
    ports: tuple          # ((device, port), ...)
    index: int
    rule: dict            # the rule's fields, addresses as 16 bytes (wire order)
    sa: int | None        # the protecting SA's row id
    state: str


def _rule_to_json(rule: dict) -> str:
    return json.dumps({name: value.hex() if isinstance(value, bytes) else value
                       for name, value in rule.items()}, sort_keys=True)


def _rule_from_json(text: str) -> dict:
    rule = json.loads(text)
    for name in ("src", "dst"):
        rule[name] = bytes.fromhex(rule[name])
    return rule


class SaDatabase:
    """The SQLite file at ``path`` (``None``: in memory, nothing survives)."""

    def __init__(self, path: os.PathLike | str | None, *, store_keys: bool = False):
        self.path = None if path is None else os.fspath(path)
        if self.path is None:
            target = ":memory:"
        else:
            # Created 0600 before SQLite opens it; an older file is brought to 0600.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            if stat.S_IMODE(os.stat(self.path).st_mode) != 0o600:
                os.chmod(self.path, 0o600)
            target = self.path
        # isolation_level None: every statement commits at once unless in `transaction`.
        self._db = sqlite3.connect(target, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before the device step it announces is taken.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)
        version = self._meta("schema")
        if version is None:
            self._set_meta("schema", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise DatabaseError(f"SA database {self.path}: schema version {version}, this "
                                f"controller reads version {SCHEMA_VERSION}")
        self.store_keys = store_keys
        if store_keys:
            self._db.execute("PRAGMA secure_delete = ON")
        elif self._meta("store_keys") == "1":
            # Asked not to keep keys any more: overwrite the ones kept so far.
            self._db.execute("PRAGMA secure_delete = ON")
            self._db.execute("UPDATE sa SET key = NULL, salt = NULL")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._set_meta("store_keys", "1" if store_keys else "0")

    def close(self):
        self._db.close()

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, name: str, value: str):
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    # -- devices ------------------------------------------------------------------------

    def check_devices(self, params: list[dict]):
        """Record the devices' parameters, or check they are those recorded."""
        rows = self._db.execute("SELECT idx, params FROM devices ORDER BY idx").fetchall()
        wanted = [json.dumps(p, sort_keys=True, default=list) for p in params]
        if not rows:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO devices (idx, params) VALUES (?, ?)",
                                     list(enumerate(wanted)))
            return
        if len(rows) != len(wanted):
            raise DatabaseError(f"SA database {self.path} is for {len(rows)} device(s), "
                                f"not {len(wanted)}")
        for (index, recorded), given in zip(rows, wanted):
            if recorded != given:
                raise DatabaseError(f"SA database {self.path}: device {index} has other "
                                    f"parameters than recorded ({given} is not {recorded})")

    # -- SAs ----------------------------------------------------------------------------

    def _sa(self, row) -> SaRow:
        return SaRow(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:])

    _SA_COLUMNS = ("id, spi, dst, direction, config, key, salt, device, engine, slot, state, "
                   "dest_engine, dest_slot, seq_seen")

    def sas(self, **where) -> list[SaRow]:
        clause = " AND ".join(f"{name} = ?" for name in where)
        query = f"SELECT {self._SA_COLUMNS} FROM sa" + (f" WHERE {clause}" if clause else "")
        return [self._sa(row) for row in
                self._db.execute(query + " ORDER BY id", tuple(where.values()))]

    def sa(self, sa_id: int) -> SaRow | None:
        found = self.sas(id=sa_id)
        return found[0] if found else None

    def add_sa(self, *, spi, dst, direction, config: dict, key, salt, device, engine,
               slot) -> int:
        if not self.store_keys:
            key = salt = None
        cursor = self._db.execute(
            "INSERT INTO sa (spi, dst, direction, config, key, salt, device, engine, slot, "
            "state, seq_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'installing', ?)",
            (spi, dst, direction, json.dumps(config, sort_keys=True), key, salt, device,
             engine, slot, config.get("seq", 0)))
        return cursor.lastrowid

    def set_sa(self, sa_id: int, **fields):
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE sa SET {assignments} WHERE id = ?",
                         (*fields.values(), sa_id))

    def remove_sa(self, sa_id: int):
        self._db.execute("DELETE FROM sa WHERE id = ?", (sa_id,))

    def used_slots(self, device: int, engine: int) -> set[int]:
        rows = self._db.execute(
            "SELECT slot FROM sa WHERE device = ? AND engine = ? UNION "
            "SELECT dest_slot FROM sa WHERE device = ? AND dest_engine = ? "
            "AND dest_slot IS NOT NULL", (device, engine, device, engine))
        return {row[0] for row in rows}

    # -- policies -----------------------------------------------------------------------

    def _policy(self, row) -> PolicyRow:
        return PolicyRow(row[0], tuple(tuple(pair) for pair in json.loads(row[1])), row[2],
                         _rule_from_json(row[3]), row[4], row[5])

    def policies(self, **where) -> list[PolicyRow]:
        clause = " AND ".join(f"{name} = ?" for name in where)
        query = "SELECT id, ports, idx, rule, sa, state FROM policy" + \
            (f" WHERE {clause}" if clause else "")
        return [self._policy(row) for row in
                self._db.execute(query + " ORDER BY id", tuple(where.values()))]

    def policy(self, policy_id: int) -> PolicyRow | None:
        found = self.policies(id=policy_id)
        return found[0] if found else None

    def add_policy(self, *, ports, index, rule, sa) -> int:
        cursor = self._db.execute(
            "INSERT INTO policy (ports, idx, rule, sa, state) VALUES (?, ?, ?, ?, 'installing')",
            (json.dumps([list(pair) for pair in ports]), index, _rule_to_json(rule), sa))
        return cursor.lastrowid

    def set_policy(self, policy_id: int, **fields):
        if "rule" in fields:
            fields["rule"] = _rule_to_json(fields["rule"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE policy SET {assignments} WHERE id = ?",
                         (*fields.values(), policy_id))

    def remove_policy(self, policy_id: int):
        self._db.execute("DELETE FROM policy WHERE id = ?", (policy_id,))
