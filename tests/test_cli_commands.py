# SPDX-License-Identifier: BSD-2-Clause
"""``espnic load``, ``sa``, ``policy`` and ``stats`` against a device that outlives
each command: the reference model behind a TCP port (:class:`ModelServer`, as
``espnic sim``'s server in milliseconds). Each command is a new controller on
the same SA database, as a user's shell would run them; no output ever holds a
key, and every mistake is one line with nothing half-installed."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP

from espnic.hdl.engine.sa import SA_COUNTERS, SaState
from espnic.host import commands
from espnic.host.cli import main
from espnic.host.config import load_config, parse_sa
from espnic.host.controller import Controller
from espnic.host.device import Device
from espnic.host.run import device_summary
from tests.model_server import ModelServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "espnic.toml")
EXAMPLE_KEYS = [spec.config.key for spec in load_config(EXAMPLE).sas] + \
    [spec.config.salt for spec in load_config(EXAMPLE).sas]
KEY = "5ec2e75ec2e75ec2e75ec2e75ec2e7aa"
SALT = "5a175a17"


@pytest.fixture
def server():
    served = ModelServer(engines=2, ports=1)
    yield served
    served.close()


@pytest.fixture
def espnic(server, tmp_path, capsys, monkeypatch):
    """``espnic(*argv)`` -> (status, stdout, stderr), on ``server`` with the test's
    SA database (by environment, as a user would set them); asserts that no key
    of the example or of :data:`KEY` appears in any output."""
    monkeypatch.setenv("ESPNIC_DEVICE", server.url)
    monkeypatch.setenv("ESPNIC_DB", str(tmp_path / "state" / "sa.db"))

    def run(*argv):
        status = main(list(argv))
        out, err = capsys.readouterr()
        for secret in [*EXAMPLE_KEYS, KEY, SALT]:
            assert secret not in out and secret not in err, f"a key or salt in {argv}"
        return status, out, err
    return run


def _json(espnic, *argv):
    status, out, err = espnic(*argv, "--json")
    assert status == 0, err
    return json.loads(out)


def _slots(url) -> dict:
    """Every valid slot of the device at ``url``: (engine, slot) -> (SPI, counters)."""
    device = Device.open(url)
    try:
        held = {}
        for engine in range(device.params["engines"]):
            for slot in range(device.params["slots"]):
                reply = device.read_sa(engine, slot)
                if reply.record.state == SaState.VALID:
                    held[engine, slot] = (int(reply.record.spi), int(reply.counters.packets))
        return held
    finally:
        device.close()


def _inject(url, packets):
    """Packets into port 0 of the device at ``url``; waits until they are through."""
    device = Device.open(url)
    try:
        for packet in packets:
            device.inject(0, packet)
        for engine in range(device.params["engines"]):
            device.send("fence_host", 0, {"engine": engine, "slot": 0})
        passed = set()
        while len(passed) < device.params["engines"]:
            passed |= {item[1] for item in device.items(wait=0.5) if item[0] == "engine_fenced"}
        device.packets()
    finally:
        device.close()


def _to_peer_b(count: int) -> list:
    """Cleartext the example's first policy protects with SA 0x2000."""
    return [bytes(IP(src="10.1.0.1", dst="10.2.0.9") / UDP(sport=1000, dport=2000)
                  / bytes(range(n + 20))) for n in range(count)]


SA_IN = ["--spi", "0x5000", "--direction", "in", "--key", KEY, "--salt", SALT,
         "--src", "198.51.100.7", "--dst", "192.0.2.1"]


# -- load, list ---------------------------------------------------------------------------

def test_load_then_list_shows_the_placements(espnic, server, tmp_path):
    status, out, err = espnic("load", EXAMPLE)
    assert status == 0, err
    lines = out.splitlines()
    assert "SA 0x1000 to 192.0.2.1 (in): engine 0 slot" in out      # pinned to engine 0
    assert lines[-1].endswith("3 SA(s) and 4 policy(ies) installed")
    listed = _json(espnic, "sa", "list")
    assert {(r["spi"], r["direction"]) for r in listed} == \
        {(0x2000, "out"), (0x3000, "out"), (0x1000, "in")}
    by_spi = {r["spi"]: r for r in listed}
    assert by_spi[0x1000]["global_engine"] == 0
    # Round-robin over the two engines, and the engines hold what the list says.
    assert {r["global_engine"] for r in listed} == {0, 1}
    assert _slots(server.url) == {(r["engine"], r["slot"]): (r["spi"], 0) for r in listed}
    for row in listed:
        assert f"SA {row['spi']:#x} to {row['dst']} ({row['direction']}): engine " \
               f"{row['global_engine']} slot {row['slot']}" in lines
        assert row["state"] == "active" and "key" not in row and "salt" not in row
    assert by_spi[0x3000]["encap"] == "udp" and by_spi[0x3000]["esn"] is True
    policies = _json(espnic, "policy", "list")
    assert [(p["action"], p["sa"]) for p in policies] == \
        [("protect", 0x2000), ("protect", 0x3000), ("bypass", None), ("discard", None)]
    assert policies[1]["dport"] == "5000-5999" and policies[1]["proto"] == "udp"
    # The database: created with its directory, private.
    db = tmp_path / "state" / "sa.db"
    assert db.exists() and db.stat().st_mode & 0o777 == 0o600


def test_a_second_command_is_a_restart_that_sees_the_first(espnic, server, tmp_path):
    assert espnic("sa", "add", *SA_IN)[0] == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "espnic.host.cli", "sa", "list", "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [(r["spi"], r["dst"]) for r in json.loads(done.stdout)] == [(0x5000, "192.0.2.1")]
    assert done.stderr == ""                        # nothing to repair
    # A controller cut after the engine held a new SA (as by a SIGKILL): the next
    # command finishes the install before it acts, and says so on stderr.
    device = Device.open(server.url)
    controller = Controller([device], db=tmp_path / "state" / "sa.db")

    def crash(step):
        if step == "sa_verified":
            raise KeyboardInterrupt
    controller.step_hook = crash
    with pytest.raises(KeyboardInterrupt):
        controller.add_sa(parse_sa({"spi": 0x6000, "direction": "in", "key": KEY,
                                             "salt": SALT, "src": "198.51.100.7",
                                             "dst": "192.0.2.1"}))
    controller.close()
    device.close()
    status, out, err = espnic("sa", "list")
    assert status == 0
    assert err.splitlines() == ["espnic sa list: reconcile: SA 0x6000 to 192.0.2.1 (in): "
                                "install finished"]
    assert "0x6000" in out and "0x5000" in out
    assert espnic("sa", "list")[2] == ""             # repaired once


def test_sas_the_database_does_not_know_are_kept_and_not_written_over(espnic, server):
    """What `espnic run --device socket://...` leaves (its controller's database is in
    memory): reported and kept, and no SA is allocated while it is there."""
    device = Device.open(server.url)
    controller = Controller([device])
    controller.add_sa(parse_sa({"spi": 0x4444, "direction": "out", "key": KEY, "salt": SALT,
                                "src": "192.0.2.1", "dst": "192.0.2.2"}))
    controller.close()
    device.close()
    held = _slots(server.url)
    status, out, err = espnic("sa", "list")
    assert status == 0 and out.strip() == "no SAs"
    assert err.splitlines() == ["espnic sa list: reconcile: SA 0x4444 to any (out) in device 0 "
                                "engine 0 slot 0, not in the database: kept"]
    for argv in (["sa", "add", *SA_IN], ["load", EXAMPLE]):
        status, out, err = espnic(*argv)
        assert status == 1 and out == ""
        assert err.splitlines()[-1].endswith("a new SA could be written over them: use the --db "
                                             "that installed them, or start the device afresh")
    assert _slots(server.url) == held


# -- sa -----------------------------------------------------------------------------------

def test_sa_add_show_del(espnic, server):
    status, out, err = espnic("sa", "add", *SA_IN, "--window", "128", "--esn",
                              "--lifetime-packets-hard", "1000", "--engine", "1")
    assert status == 0, err
    assert out.strip().startswith("SA 0x5000 to 192.0.2.1 (in): engine 1 slot 0")
    shown = _json(espnic, "sa", "show", "--spi", "0x5000")
    assert (shown["global_engine"], shown["slot"], shown["window"], shown["esn"]) == \
        (1, 0, 128, True)
    record = shown["record"]
    assert "key" not in record and "salt" not in record
    assert record["state"] == "valid" and record["direction"] == "in"
    assert record["spi"] == 0x5000 and record["window"] == 128
    assert record["tunnel"] == {"ip_version": "ipv4", "src": "198.51.100.7", "dst": "192.0.2.1"}
    assert record["lifetime"]["packets_hard"] == 1000
    assert shown["counters"] == {name: 0 for name, _ in SA_COUNTERS}
    status, text, _ = espnic("sa", "show", "--spi", "0x5000")
    assert status == 0 and "counters: packets 0" in text and "tunnel.dst 192.0.2.1" in text
    status, out, err = espnic("sa", "del", "--spi", "0x5000", "--dst", "192.0.2.1",
                              "--direction", "in")
    assert status == 0 and out.strip().endswith("deleted"), err
    assert _json(espnic, "sa", "list") == []
    assert _slots(server.url) == {}                  # zeroized
    status, _, err = espnic("sa", "show", "--spi", "0x5000")
    assert status == 1 and "--spi: no SA with SPI 0x5000" in err


def test_sa_move_keeps_the_counters(espnic, server):
    assert espnic("load", EXAMPLE)[0] == 0
    before = _json(espnic, "sa", "show", "--spi", "0x2000")
    _inject(server.url, _to_peer_b(3))
    counted = _json(espnic, "sa", "show", "--spi", "0x2000")["counters"]
    assert counted["packets"] == 3 and counted["bytes"] > 0
    target = 1 - before["global_engine"]
    status, out, err = espnic("sa", "move", "--spi", "0x2000", "--engine", str(target))
    assert status == 0, err
    assert f"-> engine {target} slot" in out
    after = _json(espnic, "sa", "show", "--spi", "0x2000")
    assert after["global_engine"] == target and after["counters"] == counted
    assert after["record"]["seq"] == 3                # the sequence number moved with it
    _inject(server.url, _to_peer_b(1))
    assert _json(espnic, "sa", "show", "--spi", "0x2000")["counters"]["packets"] == 4
    # The policy followed it: no packet went to the old slot.
    assert sum(packets for spi, packets in _slots(server.url).values() if spi == 0x2000) == 4


# -- policy -------------------------------------------------------------------------------

def test_policy_add_list_del(espnic):
    assert espnic("sa", "add", "--spi", "0x2000", "--direction", "out", "--key", KEY,
                  "--salt", SALT, "--src", "192.0.2.1", "--dst", "192.0.2.2")[0] == 0
    status, out, err = espnic("policy", "add", "--src", "10.1.0.0/16", "--dst", "10.2.0.0/16",
                              "--proto", "tcp", "--dport", "443", "--action", "protect",
                              "--sa", "0x2000", "--priority", "7")
    assert status == 0, err
    assert out.startswith("policy 1: protect 10.1.0.0/16 -> 10.2.0.0/16, proto tcp")
    assert espnic("policy", "add", "--src", "::/0", "--dst", "2001:db8::/32",
                  "--action", "bypass", "--proto", "icmp")[0] == 0
    listed = _json(espnic, "policy", "list")
    assert listed == [
        {"id": 1, "src": "10.1.0.0/16", "dst": "10.2.0.0/16", "proto": "tcp", "sport": "any",
         "dport": "443", "action": "protect", "sa": 0x2000, "priority": 7, "index": 0,
         "ports": [[0, 0]], "state": "active"},
        {"id": 2, "src": "::/0", "dst": "2001:db8::/32", "proto": "icmp", "sport": "any",
         "dport": "any", "action": "bypass", "sa": None, "priority": 0, "index": 1,
         "ports": [[0, 0]], "state": "active"}]
    status, text, _ = espnic("policy", "list")
    assert status == 0 and "2001:db8::/32" in text and "0x2000" in text
    assert espnic("policy", "del", "1")[0] == 0
    assert [p["id"] for p in _json(espnic, "policy", "list")] == [2]
    # Deleting the SA a policy protects with turns it to discard (fails closed).
    assert espnic("policy", "add", "--src", "10.1.0.0/16", "--dst", "10.2.0.0/16",
                  "--action", "protect", "--sa", "0x2000")[0] == 0
    assert espnic("sa", "del", "--spi", "0x2000")[0] == 0
    assert [(p["action"], p["sa"]) for p in _json(espnic, "policy", "list")] == \
        [("bypass", None), ("discard", None)]


# -- stats --------------------------------------------------------------------------------

def test_stats_json_is_what_the_driver_reads(espnic, server):
    assert espnic("load", EXAMPLE)[0] == 0
    _inject(server.url, _to_peer_b(5))
    summary = _json(espnic, "stats")
    device = Device.open(server.url)
    try:
        read = device_summary(device)
        slots = {(e, s): device.read_sa(e, s).counters for e in range(2) for s in range(4)}
        params = device.params
    finally:
        device.close()
    assert summary["engines"] == read["engines"] and summary["ports"] == read["ports"]
    assert summary["devices"] == [{"url": server.url, "device": read["device"],
                                   "link": read["link"],
                                   "params": {k: v for k, v in params.items()
                                              if k != "ethernet"}}]
    assert {sa["spi"] for sa in summary["sas"]} == {0x1000, 0x2000, 0x3000}
    for sa in summary["sas"]:
        counters = slots[sa["engine"], sa["slot"]]
        assert {name: sa[name] for name, _ in SA_COUNTERS} == \
            {name: int(counters[name]) for name, _ in SA_COUNTERS}
        assert sa["global_engine"] == sa["engine"]
    assert next(sa for sa in summary["sas"] if sa["spi"] == 0x2000)["packets"] == 5
    # The keys `espnic run --json` has for the same things.
    assert set(summary["sas"][0]) >= {"spi", "direction", "dst", "device", "engine", "slot",
                                      "packets", "bytes", "auth_fail"}
    status, text, _ = espnic("stats")
    assert status == 0 and "engine  sas  no_sa" in text and "0x2000" in text


def test_stats_watch_redraws_with_rates(espnic, monkeypatch):
    assert espnic("load", EXAMPLE)[0] == 0
    monkeypatch.setattr(commands, "WATCH_ITERATIONS", 2)
    status, out, err = espnic("stats", "--watch", "0.05", "--json")
    assert status == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert all(sa["packets_per_s"] is None for sa in first["sas"])
    assert all(sa["packets_per_s"] == 0 and sa["bytes_per_s"] == 0 for sa in second["sas"])
    status, out, err = espnic("stats", "--watch", "0.05")
    assert status == 0, err
    assert out.count("espnic stats: every 0.05 s, Ctrl-C stops") == 2
    assert "pkt/s" in out


def test_stats_watch_stops_on_ctrl_c(server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ESPNIC_DEVICE": server.url,
           "ESPNIC_DB": str(tmp_path / "sa.db")}
    child = subprocess.Popen([sys.executable, "-m", "espnic.host.cli", "stats", "--watch",
                              "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, env=env)
    try:
        assert child.stdout.readline().startswith("espnic stats: every 0.1 s")
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0 and "Traceback" not in err


# -- mistakes -----------------------------------------------------------------------------

BAD = [
    (["sa", "add", *SA_IN, "--bogus", "1"], 2, "espnic sa add: unrecognized arguments: --bogus"),
    (["sa", "add", *SA_IN[:5], KEY[:-2], *SA_IN[6:]], 1,
     "--key: must be hex of 16 or 32 bytes, not 15 bytes"),
    (["sa", "add", *SA_IN[:5], "zz" + KEY[2:], *SA_IN[6:]], 1, "--key: must be hex"),
    (["sa", "add", *SA_IN[:7], "0102", *SA_IN[8:]], 1, "--salt: must be hex of 4 bytes"),
    (["sa", "add", "--spi", "255", *SA_IN[2:]], 1, "--spi: 255 is reserved"),
    (["sa", "add", "--spi", "0x2000", "--direction", "out", "--key", KEY, "--salt", SALT,
      "--src", "192.0.2.1", "--dst", "192.0.2.2"], 1, "--spi: duplicate SPI: SA 0x2000"),
    (["sa", "add", *SA_IN, "--engine", "2"], 1, "--engine: engine 2 does not exist"),
    (["sa", "add", *SA_IN, "--mode", "tunel"], 1, "--mode: must be one of"),
    (["sa", "add", *SA_IN, "--esn", "maybe"], 1, "--esn: must be true or false"),
    (["sa", "add", *SA_IN[:8]], 1, "--src: required in tunnel mode"),
    (["sa", "del", "--spi", "0x7777"], 1, "--spi: no SA with SPI 0x7777"),
    (["sa", "show", "--spi", "0x2000", "--direction", "in"], 1, "--spi: no SA with SPI 0x2000 (in)"),
    (["sa", "show", "--spi", "0x2000", "--dst", "nowhere"], 2, "--dst: not an IPv4 or IPv6"),
    (["sa", "move", "--spi", "0x7777", "--engine", "1"], 1, "--spi: no SA with SPI 0x7777"),
    (["sa", "move", "--spi", "0x2000", "--engine", "5"], 1, "--engine: engine 5 does not exist"),
    (["policy", "add", "--src", "10.1.0.0/16", "--dst", "10.9.0.0/16", "--action", "protect",
      "--sa", "0x1000"], 1, "--sa: no outbound SA with SPI 0x1000"),
    (["policy", "add", "--src", "10.1.0.1/16", "--dst", "10.9.0.0/16", "--action", "bypass"],
     1, "--src: '10.1.0.1/16' has host bits set"),
    (["policy", "add", "--src", "10.1.0.0/16", "--dst", "10.9.0.0/16", "--action", "allow"],
     1, "--action: must be one of"),
    (["policy", "del", "99"], 1, "no policy 99"),
    (["sa", "list", "--device", "socket://127.0.0.1:1"], 1, "device not reachable"),
    (["sa", "list", "--device", "model://"], 1, "--device model://: not supported: model://"),
    (["stats", "--device", "sim://"], 1, "(a device that outlives the command: espnic sim, "
                                         "then socket://"),
    (["stats", "--watch", "0"], 2, "--watch: must be seconds"),
    (["load", EXAMPLE], 1, "espnic.toml: sa[0].spi: duplicate SPI: SA 0x2000"),
    (["sa"], 2, "espnic sa: the following arguments are required: ACTION"),
]


@pytest.mark.parametrize("argv, code, message", BAD, ids=[" ".join(b[0][:3]) + f" {n}"
                                                          for n, b in enumerate(BAD)])
def test_mistakes_are_one_line_and_change_nothing(espnic, server, argv, code, message):
    assert espnic("load", EXAMPLE)[0] == 0
    before = (_json(espnic, "sa", "list"), _json(espnic, "policy", "list"), _slots(server.url))
    status, out, err = espnic(*argv)
    assert (status, out) == (code, ""), err
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith("espnic ")
    assert (_json(espnic, "sa", "list"), _json(espnic, "policy", "list"),
            _slots(server.url)) == before


def test_a_bad_config_installs_nothing(espnic, server, tmp_path):
    text = open(EXAMPLE).read()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("window = 1024", "windw = 1024"))
    status, out, err = espnic("load", str(bad))
    assert status == 1 and out == "" and "sa[2].windw: unknown field" in err
    # A config that fails half-way (the device is out of SA slots at the fifth SA):
    # the four installed before it are taken out again.
    small = ModelServer(engines=1, slots=4)
    try:
        full = tmp_path / "full.toml"
        full.write_text("".join(f"""
[[sa]]
spi = {0x8000 + n}
direction = "out"
key = "{KEY}"
salt = "{SALT}"
src = "192.0.2.1"
dst = "192.0.2.2"
""" for n in range(5)))
        other = ["--device", small.url, "--db", str(tmp_path / "small.db")]
        status, out, err = espnic("load", str(full), *other)
        assert status == 1 and out == "" and err.count("\n") == 1
        assert "no free SA slot" in err, err
        assert _json(espnic, "sa", "list", *other) == []
        assert _slots(small.url) == {}
    finally:
        small.close()


def test_a_bad_database_is_one_line(espnic, tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not SQLite" * 500)
    for db, message in ((corrupt, f"--db {corrupt}: file is not a database"),
                        (tmp_path, f"--db {tmp_path}: Is a directory")):
        status, out, err = espnic("sa", "list", "--db", str(db))
        assert (status, out) == (1, "") and err == f"espnic sa list: {message}\n"


def test_the_key_is_not_echoed_by_a_usage_error(espnic):
    status, _, err = espnic("sa", "add", *SA_IN, f"--kee={KEY}", KEY)
    assert status == 2 and "--kee (1 value not shown)" in err


# -- several devices ----------------------------------------------------------------------

def test_two_devices_share_the_sas(espnic, server):
    other = ModelServer(engines=2, ports=1)
    try:
        both = ["--device", server.url, "--device", other.url]
        status, out, err = espnic("load", EXAMPLE, *both)
        assert status == 0, err
        for n in range(3):
            assert espnic("sa", "add", "--spi", str(0x7000 + n), "--direction", "in",
                          "--key", KEY, "--salt", SALT, "--src", "198.51.100.7",
                          "--dst", "192.0.2.1", *both)[0] == 0
        listed = _json(espnic, "sa", "list", *both)
        assert {r["device"] for r in listed} == {0, 1}
        for device, url in enumerate((server.url, other.url)):
            assert _slots(url) == {(r["engine"], r["slot"]): (r["spi"], 0) for r in listed
                                   if r["device"] == device}
        assert all(r["global_engine"] == 2 * r["device"] + r["engine"] for r in listed)
        status, text, _ = espnic("sa", "list", *both)
        assert "device" in text.splitlines()[0]
        summary = _json(espnic, "stats", *both)
        assert len(summary["engines"]) == 4 and [d["url"] for d in summary["devices"]] == \
            [server.url, other.url]
        # An SA moves only among its device's engines.
        on_second = next(r for r in listed if r["device"] == 1)
        status, _, err = espnic("sa", "move", "--spi", str(on_second["spi"]), "--engine", "0",
                                *both)
        assert status == 1 and "--engine: not supported" in err
        target = 3 if on_second["global_engine"] == 2 else 2
        status, _, err = espnic("sa", "move", "--spi", str(on_second["spi"]), "--engine",
                                str(target), *both)
        assert status == 0, err
        assert next(r for r in _json(espnic, "sa", "list", *both)
                    if r["spi"] == on_second["spi"])["global_engine"] == target
        # The database belongs to these two devices.
        status, _, err = espnic("sa", "list")
        assert status == 1 and "--db: SA database" in err and "is for 2 device(s), not 1" in err
    finally:
        other.close()


def test_board_commands_report_a_bad_option_in_one_line(capsys):
    # build and flash are built now (tests/test_boards.py); a mistake is one line.
    for command in ("build", "flash"):
        assert main([command, "--anything"]) == 2
        err = capsys.readouterr().err
        assert err == f"espnic {command}: the following arguments are required: --board\n"
