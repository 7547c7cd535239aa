# SPDX-License-Identifier: BSD-2-Clause
"""``espnic load``, ``sa``, ``policy`` and ``stats``: the commands over the security
controller (DESIGN.md section 7; :mod:`espnic.host.cli` parses their options).

Every command opens a :class:`~espnic.host.controller.Controller` over the
devices of its ``--device`` URLs (engines numbered globally, device after
device, as in a config's ``engine``) and the SA database at ``--db``, and
reconciles the two first (:func:`session`): a command after a crash repairs
what the crash cut short before it acts. The devices must outlive the command
(``socket://`` to ``espnic sim``, a serial port); ``sim://`` and ``model://``
live only as long as one command and are refused.

Each command's function returns data (dicts with the keys ``--json`` prints);
the ``*_text`` functions render them for people. No output holds a key or a
salt: the device never gives them back and the database does not keep them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sqlite3
import time
from pathlib import Path

from ..hdl.engine.sa import SA_COUNTERS
from .config import ConfigError, PROTO_NAMES, load_config, parse_policy, parse_sa

__all__ = ["CommandError", "DEFAULT_DEVICE", "DEFAULT_DB", "device_urls", "database_path",
           "session", "load", "sa_add", "sa_delete", "sa_rows", "sa_show", "sa_move",
           "policy_add", "policy_delete", "policy_rows", "stats", "watch",
           "placement_text", "sa_list_text", "sa_show_text", "policy_text", "policy_list_text",
           "stats_text"]

#: The device when neither ``--device`` nor ``$ESPNIC_DEVICE`` says: ``espnic sim``'s.
DEFAULT_DEVICE = "socket://127.0.0.1:5170"
#: The SA database when neither ``--db`` nor ``$ESPNIC_DB`` says.
DEFAULT_DB = "~/.local/state/espnic/sa.db"

#: Test seam: ``watch`` stops after this many redraws (None: at Ctrl-C only).
WATCH_ITERATIONS = None


class CommandError(Exception):
    """A user's mistake, as one line naming the option and the reason."""


# -- devices and the database ------------------------------------------------------------

def device_urls(given: list[str] | None) -> list[str]:
    """The ``--device`` URLs given, else ``$ESPNIC_DEVICE`` (URLs separated by
    whitespace), else :data:`DEFAULT_DEVICE`."""
    if given:
        return list(given)
    return os.environ.get("ESPNIC_DEVICE", "").split() or [DEFAULT_DEVICE]


def database_path(given: str | None) -> Path:
    """``--db``, else ``$ESPNIC_DB``, else :data:`DEFAULT_DB` (``~`` expanded)."""
    return Path(os.path.expanduser(given or os.environ.get("ESPNIC_DB") or DEFAULT_DB))


def _check_url(url: str):
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in ("sim", "model"):
        raise CommandError(f"--device {url}: not supported: {scheme}:// lives only as long as "
                           f"one command (a device that outlives the command: espnic sim, "
                           f"then socket://127.0.0.1:5170)")


@contextlib.contextmanager
def session(urls: list[str], db: Path, *, notify=None, allocates: bool = False):
    """A :class:`Controller` over the devices at ``urls`` with the SA database ``db``
    (created with its directory), reconciled with the devices (SAs the devices hold
    that the database does not know are kept); ``notify(line)`` is told each
    difference reconcile found and repaired.

    ``allocates``: the command will put SAs into free slots. It is refused while a
    device holds SAs the database does not know: the controller takes a slot as
    free by its database, and would write over them."""
    from .controller import Controller, DatabaseError
    from .device import Device

    for url in urls:
        _check_url(url)
    try:
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise CommandError(f"--db {db}: cannot create {db.parent}: "
                           f"{error.strerror or error}") from None
    devices = []
    try:
        for url in urls:
            devices.append(Device.open(url))
        try:
            controller = Controller(devices, db=db)
        except DatabaseError as error:
            raise CommandError(f"--db: {error} (a database belongs to one set of devices: "
                               f"give these their own --db)") from None
        except (OSError, sqlite3.Error) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise CommandError(f"--db {db}: {reason}") from None
        try:
            report = controller.reconcile(orphans="keep")
            if notify is not None:
                for line in report.differences:
                    notify(line)
            if allocates and report.orphans:
                raise CommandError(
                    f"--db: the device(s) hold {len(report.orphans)} SA(s) that {db} does not "
                    f"know (left by `espnic run` or a controller with another --db); a new SA "
                    f"could be written over them: use the --db that installed them, or start "
                    f"the device afresh")
            yield controller
        finally:
            controller.close()
    finally:
        for device in devices:
            device.close()


# -- names --------------------------------------------------------------------------------

def _sa_name(spi: int, dst: str | None, direction: str) -> str:
    return f"SA {spi:#x} to {dst or 'any'} ({direction})"


def _global_engine(controller, placement) -> int:
    return controller.global_engine(placement.device, placement.engine)


def _row(controller, info) -> dict:
    """An SA as ``sa list --json`` gives it: ``espnic run --json``'s identity and
    place keys (``engine``: of its device), ``global_engine`` (the number
    ``--engine`` and a config's ``engine`` take), ``state`` and its configuration
    (no key, no salt)."""
    config = {name: value for name, value in info.config.items()
              if name not in ("spi", "direction", "dst", "engine")}
    return {"spi": info.spi, "direction": info.direction, "dst": info.dst,
            "device": info.placement.device, "engine": info.placement.engine,
            "slot": info.placement.slot, "global_engine": _global_engine(controller, info.placement),
            "state": info.state, **config}


def _dst(text: str | None) -> str | None:
    return None if text is None else str(ipaddress.ip_address(text))


def _one_sa(controller, spi: int, dst: str | None, direction: str | None):
    """The one SA with ``spi`` (and ``dst``, ``direction`` if given), or a
    :class:`CommandError` naming ``--spi``."""
    dst = _dst(dst)
    found = [info for info in controller.sas() if info.spi == spi
             and (dst is None or info.dst == dst)
             and (direction is None or info.direction == direction)]
    if not found:
        where = (f" to {dst}" if dst else "") + (f" ({direction})" if direction else "")
        raise CommandError(f"--spi: no SA with SPI {spi:#x}{where} (espnic sa list shows "
                           f"the SAs)")
    if len(found) > 1:
        raise CommandError(f"--spi: SPI {spi:#x} names {len(found)} SAs ("
                           + ", ".join(_sa_name(i.spi, i.dst, i.direction) for i in found)
                           + "): say which with --dst and --direction")
    return found[0]


def _check_engine(controller, engine: int | None, option: str = "--engine"):
    count = len(controller.engines)
    if engine is not None and not 0 <= engine < count:
        raise CommandError(f"{option}: engine {engine} does not exist: the device(s) have "
                           f"engine{'s' if count > 1 else ''} 0..{count - 1}")


def _option_error(error: ConfigError) -> CommandError:
    """A :class:`ConfigError` about a field given as an option, naming the option."""
    if error.field is None:
        return CommandError(error.reason)
    option = "--" + error.field.replace(".", "-").replace("_", "-")
    return CommandError(f"{option}: {error.reason}")


# -- espnic load --------------------------------------------------------------------------

def load(controller, path) -> dict:
    """Every SA, then every policy of the config at ``path``, all or nothing
    (``espnic run``'s :func:`~espnic.host.run.install`); where each went."""
    from .run import install

    config = load_config(path)
    config.check_engines(len(controller.engines))
    installed = {(info.spi, info.dst, info.direction) for info in controller.sas()}
    for index, spec in enumerate(config.sas):
        sa = spec.config
        if (sa.spi, sa.dst, sa.direction) in installed:
            raise ConfigError(f"{config.source}: sa[{index}]", "spi",
                              f"duplicate SPI: {_sa_name(sa.spi, sa.dst, sa.direction)} is "
                              f"installed already (espnic sa del, or another SPI)")
    done = install(controller, config)
    sas = [_row(controller, controller.sa(what.spi, dst=what.dst, direction=what.direction))
           for kind, what in done if kind == "sa"]
    policies = {row["id"]: row for row in policy_rows(controller)}
    return {"sas": sas, "policies": [policies[what] for kind, what in done if kind == "policy"]}


# -- espnic sa ----------------------------------------------------------------------------

def sa_add(controller, options: dict) -> dict:
    """``espnic sa add``: ``options`` are the ``[[sa]]`` fields given (CLI strings;
    ``lifetime`` a dict), the SA installed where ``engine`` says or the controller
    allocates it."""
    try:
        spec = parse_sa(options, where="")
    except ConfigError as error:
        raise _option_error(error) from None
    config = spec.config
    if config.direction == "in" and config.dst is None:
        raise CommandError("--dst: required for an inbound SA (the forwarders find it by SPI "
                           "and destination)")
    _check_engine(controller, spec.engine)
    for info in controller.sas():
        if (info.spi, info.dst, info.direction) == (config.spi, config.dst, config.direction):
            raise CommandError(f"--spi: duplicate SPI: {_sa_name(info.spi, info.dst, info.direction)} "
                               f"is installed already (espnic sa del, or another SPI)")
    placement = controller.add_sa(spec)
    return _row(controller, next(i for i in controller.sas() if i.placement == placement))


def sa_delete(controller, spi: int, dst: str | None = None,
              direction: str | None = None) -> dict:
    """``espnic sa del``: its filters, a drain, the slot zeroized."""
    info = _one_sa(controller, spi, dst, direction)
    row = _row(controller, info)
    controller.delete_sa(info.spi, dst=info.dst, direction=info.direction)
    return row


def sa_rows(controller) -> list[dict]:
    """``espnic sa list``: every SA the controller knows (:func:`_row`)."""
    return [_row(controller, info) for info in controller.sas()]


def _plain(value):
    """A record field's value for JSON: enums by lower-case name, structures as dicts."""
    if hasattr(value, "shape") and hasattr(value.shape(), "members"):
        return {name: _plain(value[name]) for name, _ in value.shape()}
    if hasattr(value, "name") and hasattr(value, "value"):
        return value.name.lower()
    return int(value)


def sa_show(controller, spi: int, dst: str | None = None, direction: str | None = None) -> dict:
    """``espnic sa show``: the SA's :func:`_row`, its ``record`` as its engine has it
    (no key, no salt: they read back as zero and are left out) and its ``counters``."""
    info = _one_sa(controller, spi, dst, direction)
    reply = controller.sa_state(info.spi, dst=info.dst, direction=info.direction)
    record = {name: _plain(reply.record[name]) for name, _ in reply.record.shape()
              if name not in ("key", "salt")}
    tunnel = record["tunnel"]
    if tunnel["ip_version"] in ("ipv4", "ipv6"):
        make = ipaddress.IPv4Address if tunnel["ip_version"] == "ipv4" else ipaddress.IPv6Address
        tunnel["src"], tunnel["dst"] = str(make(tunnel["src"])), str(make(tunnel["dst"]))
    counters = {name: int(reply.counters[name]) for name, _ in SA_COUNTERS}
    return {**_row(controller, info), "record": record, "counters": counters}


def sa_move(controller, spi: int, engine: int, dst: str | None = None,
            direction: str | None = None) -> tuple[dict, dict]:
    """``espnic sa move``: the SA live to ``engine`` (a global index) of its device;
    ``(before, after)`` rows."""
    info = _one_sa(controller, spi, dst, direction)
    _check_engine(controller, engine)
    device, _ = controller.engines[engine]
    if device != info.placement.device:
        raise CommandError(f"--engine: not supported: engine {engine} is on device {device} and "
                           f"{_sa_name(info.spi, info.dst, info.direction)} on device "
                           f"{info.placement.device} (the fabric links the engines of one "
                           f"device)")
    before = _row(controller, info)
    controller.move_sa(info.spi, engine, dst=info.dst, direction=info.direction)
    return before, _row(controller, controller.sa(info.spi, dst=info.dst,
                                                  direction=info.direction))


# -- espnic policy ------------------------------------------------------------------------

def policy_add(controller, options: dict) -> dict:
    """``espnic policy add``: ``options`` are the ``[[policy]]`` fields given."""
    try:
        spec = parse_policy(options, where="")
    except ConfigError as error:
        raise _option_error(error) from None
    if spec.sa is not None:
        outbound = [info for info in controller.sas()
                    if info.spi == spec.sa and info.direction == "out"]
        if not outbound:
            raise CommandError(f"--sa: no outbound SA with SPI {spec.sa:#x} (espnic sa list "
                               f"shows the SAs)")
        if len(outbound) > 1:
            raise CommandError(f"--sa: SPI {spec.sa:#x} names {len(outbound)} outbound SAs: a "
                               f"policy's SA needs an SPI of its own")
    policy_id = controller.add_policy(spec)
    return next(row for row in policy_rows(controller) if row["id"] == policy_id)


def policy_delete(controller, policy_id: int) -> dict:
    found = [row for row in policy_rows(controller) if row["id"] == policy_id]
    if not found:
        raise CommandError(f"ID: no policy {policy_id} (espnic policy list shows the ids)")
    controller.delete_policy(policy_id)
    return found[0]


def _prefix(address: bytes, length: int, ipv6: bool) -> str:
    return str(ipaddress.ip_network((address[:16 if ipv6 else 4], length), strict=False))


def _ports_text(lo: int, hi: int) -> str:
    return "any" if (lo, hi) == (0, 65535) else str(lo) if lo == hi else f"{lo}-{hi}"


def policy_rows(controller) -> list[dict]:
    """``espnic policy list``: every policy in the config's words (``sa``: the SPI of
    the outbound SA it protects with), with its ``id``, its rule ``index`` in the
    ports' tables, the ``ports`` (``[device, port]`` pairs) and its ``state``. A
    PROTECT policy whose SA was deleted reads ``discard``: it fails closed."""
    from ..hdl.forwarder.policy import PolicyAction

    spis = {info.id: info.spi for info in controller.sas()}
    names = {number: name for name, number in PROTO_NAMES.items()}
    rows = []
    for policy in controller.policies():
        rule = policy.rule
        ipv6 = bool(rule["ipv6"])
        proto = "any" if rule["any_proto"] else names.get(rule["proto"], rule["proto"])
        if ipv6 and proto == "icmpv6":
            proto = "icmp"
        rows.append({"id": policy.id, "src": _prefix(rule["src"], rule["src_len"], ipv6),
                     "dst": _prefix(rule["dst"], rule["dst_len"], ipv6), "proto": proto,
                     "sport": _ports_text(rule["sport_lo"], rule["sport_hi"]),
                     "dport": _ports_text(rule["dport_lo"], rule["dport_hi"]),
                     "action": PolicyAction(rule["action"]).name.lower(),
                     "sa": spis.get(policy.sa), "priority": rule["priority"],
                     "index": policy.index, "ports": [list(pair) for pair in policy.ports],
                     "state": policy.state})
    return rows


# -- espnic stats -------------------------------------------------------------------------

def stats(controller, urls: list[str]) -> dict:
    """``espnic stats``: the devices' counters by unit and every SA's counters.

    ``engines`` and ``ports`` are ``espnic run --json``'s, device after device
    (the index in ``engines`` is the global engine number); ``sas`` are its SA
    rows plus ``global_engine``; ``devices`` gives per device its ``url``,
    ``params``, device-wide (``device``) and host link (``link``) counters."""
    from .run import device_summary, sa_summary

    per = [device_summary(device) for device in controller.devices]
    sas = sa_summary(controller)
    for row in sas:
        row["global_engine"] = controller.global_engine(row["device"], row["engine"])
    return {
        "engines": [engine for summary in per for engine in summary["engines"]],
        "ports": [port for summary in per for port in summary["ports"]],
        "sas": sas,
        "devices": [{"url": url, "device": summary["device"], "link": summary["link"],
                     "params": {name: value for name, value in device.params.items()
                                if name != "ethernet"}}
                    for url, summary, device in zip(urls, per, controller.devices)],
    }


def _sa_identity(row: dict) -> tuple:
    return row["spi"], row["dst"], row["direction"]


def watch(controller, urls: list[str], interval: float, emit, *, iterations: int | None = None,
          sleep=time.sleep):
    """``espnic stats --watch``: :func:`stats` every ``interval`` seconds, each SA row
    with ``packets_per_s`` and ``bytes_per_s`` from the change since the last (None
    the first time), given to ``emit(summary)``; until interrupted (Ctrl-C) or after
    ``iterations``."""
    iterations = WATCH_ITERATIONS if iterations is None else iterations
    previous, done = None, 0
    while True:
        now = time.monotonic()
        summary = stats(controller, urls)
        last = {} if previous is None else {_sa_identity(r): r for r in previous[1]["sas"]}
        for row in summary["sas"]:
            before = last.get(_sa_identity(row))
            if before is None:
                row["packets_per_s"] = row["bytes_per_s"] = None
                continue
            seconds = max(now - previous[0], 1e-9)
            for name in ("packets", "bytes"):
                # A counter that went down is a new SA under the same name.
                row[f"{name}_per_s"] = round(max(row[name] - before[name], 0) / seconds, 1)
        emit(summary)
        previous = (now, summary)
        done += 1
        if iterations is not None and done >= iterations:
            return
        sleep(max(interval - (time.monotonic() - now), 0))


# -- text ---------------------------------------------------------------------------------

def _table(rows, columns) -> str:
    from ..bench.report import table
    return table(rows, columns)


def placement_text(row: dict, several: bool) -> str:
    where = (f"device {row['device']} " if several else "") + \
        f"engine {row['global_engine']} slot {row['slot']}"
    return f"{_sa_name(row['spi'], row['dst'], row['direction'])}: {where}"


def sa_list_text(rows: list[dict], several: bool) -> str:
    if not rows:
        return "no SAs"
    shown = [{"spi": f"{r['spi']:#x}", "dir": r["direction"], "dst": r["dst"] or "any",
              "src": r["src"] or "any", "mode": r["mode"], "encap": r["encap"],
              "device": r["device"], "engine": r["global_engine"], "slot": r["slot"],
              "state": r["state"]} for r in rows]
    columns = [c for c in shown[0] if several or c != "device"]
    return _table(shown, columns)


def sa_show_text(shown: dict) -> str:
    lines = [f"{_sa_name(shown['spi'], shown['dst'], shown['direction'])}: "
             f"{shown['state']}, device {shown['device']} engine {shown['global_engine']} "
             f"slot {shown['slot']}"]
    skip = {"spi", "dst", "direction", "device", "engine", "slot", "global_engine", "state",
            "record", "counters"}
    lines.append("config:   " + ", ".join(f"{name} {json.dumps(value)}"
                                          for name, value in shown.items() if name not in skip))
    record = shown["record"]
    flat = []
    for name, value in record.items():
        if isinstance(value, dict):
            flat += [f"{name}.{inner} {v}" for inner, v in value.items()]
        else:
            flat.append(f"{name} {value}")
    lines.append("device:   " + ", ".join(flat))
    lines.append("counters: " + ", ".join(f"{n} {v}" for n, v in shown["counters"].items()))
    return "\n".join(lines)


def policy_text(row: dict) -> str:
    what = f"{row['action']} {row['src']} -> {row['dst']}, proto {row['proto']}, sport " \
           f"{row['sport']}, dport {row['dport']}"
    if row["sa"] is not None:
        what += f", SA {row['sa']:#x}"
    return f"policy {row['id']}: {what}, priority {row['priority']} (rule {row['index']})"


def policy_list_text(rows: list[dict]) -> str:
    if not rows:
        return "no policies"
    shown = [{**r, "sa": "-" if r["sa"] is None else f"{r['sa']:#x}", "rule": r["index"],
              "ports": " ".join(f"{d}:{p}" for d, p in r["ports"])} for r in rows]
    return _table(shown, ["id", "priority", "src", "dst", "proto", "sport", "dport", "action",
                          "sa", "rule", "ports", "state"])


def stats_text(summary: dict) -> str:
    """The tables ``espnic stats`` prints (``espnic run``'s, plus rates when watching)."""
    sas = summary["sas"]
    engines = [{"engine": k, "sas": sum(sa["global_engine"] == k for sa in sas), **counts}
               for k, counts in enumerate(summary["engines"])]
    lines = [_table(engines, list(engines[0])), ""]
    if sas:
        rates = "packets_per_s" in sas[0]
        rows = []
        for sa in sas:
            row = {"spi": f"{sa['spi']:#x}", "dir": sa["direction"],
                   "engine": sa["global_engine"], "slot": sa["slot"]}
            if rates:
                row["pkt/s"] = "-" if sa["packets_per_s"] is None else sa["packets_per_s"]
                row["B/s"] = "-" if sa["bytes_per_s"] is None else sa["bytes_per_s"]
            row.update({name: sa[name] for name, field in SA_COUNTERS if field.width > 1})
            rows.append(row)
        lines += [_table(rows, list(rows[0])), ""]
    else:
        lines += ["no SAs", ""]
    ports = [{"port": k, **counts} for k, counts in enumerate(summary["ports"])]
    lines.append(_table(ports, list(ports[0])))
    for index, device in enumerate(summary["devices"]):
        counters = {**device["device"], **device["link"]}
        lines.append(f"device {index} ({device['url']}): "
                     + ", ".join(f"{name} {value}" for name, value in counters.items()))
    return "\n".join(lines)
