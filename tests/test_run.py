# SPDX-License-Identifier: BSD-2-Clause
"""``espnic run``, the main job: the example config and pcap through a device; what
comes out decrypts with scapy (an ESP implementation of its own) to what went in,
the simulated device (Verilator) and the model give the same file and counters,
and every user mistake is one line and a non-zero exit."""

import json

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP

from espnic.host.cli import main
from espnic.host.config import load_config
from espnic.host.pcapio import read_capture, write_capture
from espnic.sim.interop import read_pcap, scapy_sa
from espnic.sim.model.forwarder import parse

EXAMPLE = "examples/espnic.toml"
PCAP = "examples/example.pcap"


def _run(capsys, *args) -> tuple[int, str, str]:
    status = main(["run", *args])
    out, err = capsys.readouterr()
    return status, out, err


def _esp(packet: bytes):
    """``(SPI, scapy ESP layer)`` of an ESP or UDP-encapsulated ESP packet, else None."""
    ip = IP(packet)
    if ip.proto == 50:
        return ip[ESP].spi, ip
    if ip.proto == 17 and ip[UDP].dport == 4500:
        return ESP(bytes(ip[UDP].payload)).spi, ip
    return None


def test_run_on_the_model_decrypts_with_scapy(tmp_path, capsys):
    out = tmp_path / "out.pcap"
    status, text, err = _run(capsys, "--config", EXAMPLE, "--in", PCAP, "--out", str(out),
                             "--device", "model://", "--json")
    assert status == 0, err
    summary = json.loads(text)
    config = load_config(EXAMPLE)
    outbound = {spec.config.spi: spec.config for spec in config.sas
                if spec.config.direction == "out"}
    inputs = read_pcap(PCAP)
    outputs = read_pcap(out)
    assert summary["packets"]["in"] == len(inputs) and summary["packets"]["out"] == len(outputs)
    protected = 0
    for packet in outputs:
        esp = _esp(packet)
        if esp is None:
            # Cleartext out: a bypassed packet or an inbound SA's decapsulated one.
            assert parse(packet).proto in (1, 6, 17)
            continue
        spi, ip = esp
        inner = scapy_sa(outbound[spi]).decrypt(ip)       # raises on a bad ICV
        assert bytes(inner) in inputs, f"SA {spi:#x}: decrypted to no input packet"
        protected += 1
    assert protected == sum(sa["packets"] for sa in summary["sas"] if sa["direction"] == "out")
    assert protected >= 8 and len(outputs) > protected
    # The inbound SA's packets came out decapsulated, as many as it counted.
    inbound = next(sa for sa in summary["sas"] if sa["direction"] == "in")
    assert inbound["packets"] == 4 and inbound["auth_fail"] == 0
    assert read_capture(out).linktype == read_capture(PCAP).linktype


@pytest.mark.slow
def test_the_simulated_device_and_the_model_give_the_same_run(tmp_path, capsys):
    """Acceptance: the default device (Verilator) and model:// write the same output
    file and report the same counters."""
    runs = {}
    for name, device in (("model", ["--device", "model://"]), ("sim", [])):
        out = tmp_path / f"{name}.pcap"
        status, text, err = _run(capsys, "--config", EXAMPLE, "--in", PCAP, "--out", str(out),
                                 "--json", *device)
        assert status == 0, err
        runs[name] = out.read_bytes(), json.loads(text)
    assert runs["sim"][0] == runs["model"][0]
    assert runs["sim"][1] == runs["model"][1]
    assert runs["sim"][1]["packets"]["out"] >= 10


def _config_with(tmp_path, *changes) -> str:
    """The example config with each ``old, new`` of ``changes`` (first occurrence)."""
    text = open(EXAMPLE).read()
    for old, new in zip(changes[::2], changes[1::2]):
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("change, message", [
    (('key = "000102030405060708090a0b0c0d0e0f"', 'key = "000102030405060708090a0b0c0d0e"'),
     "sa[0].key: must be hex of 16 or 32 bytes, not 15 bytes"),
    (('key = "000102030405060708090a0b0c0d0e0f"', 'key = "zz0102030405060708090a0b0c0d0e0f"'),
     "sa[0].key: must be hex"),
    (("spi = 0x3000", "spi = 0x2000", 'dst = "203.0.113.3"', 'dst = "192.0.2.2"'),
     "sa[1].spi"),
    (("spi = 0x3000", "spi = 255"), "sa[1].spi"),
    (("engine = 0 ", "engine = 3 "), "sa[2].engine: engine 3 does not exist"),
    (("window = 1024", "windw = 1024"), "sa[2].windw"),
])
def test_bad_config_is_one_line_and_nothing_runs(tmp_path, capsys, change, message):
    out = tmp_path / "out.pcap"
    status, text, err = _run(capsys, "--config", _config_with(tmp_path, *change), "--in", PCAP,
                             "--out", str(out), "--device", "model://")
    assert status != 0 and text == ""
    assert err.count("\n") == 1 and err.startswith("espnic run: ") and message in err, err
    assert "0102030405060708090a0b0c0d0e" not in err           # no key in a message


def test_bad_files_devices_and_options(tmp_path, capsys):
    out = str(tmp_path / "out.pcap")
    corrupt = tmp_path / "corrupt.pcap"
    corrupt.write_bytes(open(PCAP, "rb").read()[:100])
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"not a capture at all")
    cases = [
        (["--in", str(tmp_path / "missing.pcap")], "missing.pcap: no such file"),
        (["--in", str(corrupt)], "corrupt.pcap: corrupt"),
        (["--in", str(garbage)], "garbage.pcap: not a pcap or pcapng file"),
        (["--device", "socket://127.0.0.1:1"], "device not reachable"),
        (["--device", "pcie://0000:7f:1f.7"],
         "no such BAR: /sys/bus/pci/devices/0000:7f:1f.7/resource0 does not exist"),
        (["--device", "model://?engines=2", "--engines", "3"], "give one"),
    ]
    for args, message in cases:
        options = {"--config": EXAMPLE, "--in": PCAP, "--out": out, "--device": "model://",
                   **dict(zip(args[::2], args[1::2]))}
        status, text, err = _run(capsys, *(word for pair in options.items() for word in pair))
        assert status != 0 and err.startswith("espnic run: ") and message in err, (args, err)
        assert err.count("\n") == 1, err
    status, _text, err = _run(capsys, "--config", EXAMPLE, "--in", PCAP, "--out", out,
                              "--bogus")
    assert status == 2 and "unrecognized arguments: --bogus" in err
    status, _text, err = _run(capsys, "--config", EXAMPLE, "--in", PCAP)
    assert status == 2 and "--out" in err


def test_ethernet_in_ethernet_out(tmp_path, capsys):
    """An Ethernet capture (with a non-IP frame in it) comes out as Ethernet."""
    from espnic.host.pcapio import ethernet_frame
    capture = read_capture(PCAP)
    frames = [(t, ethernet_frame(p)) for t, p in capture.packets]
    frames.insert(1, (frames[0][0], bytes(12) + b"\x08\x06" + bytes(28)))     # ARP
    source = tmp_path / "eth.pcap"
    write_capture(source, 1, frames)
    out = tmp_path / "out.pcap"
    status, text, err = _run(capsys, "--config", EXAMPLE, "--in", str(source), "--out",
                             str(out), "--device", "model://", "--json")
    assert status == 0, err
    summary = json.loads(text)
    assert summary["packets"]["not_ip"] == 1
    assert read_capture(out).linktype == 1
    assert len(read_pcap(out)) == summary["packets"]["out"] > 0
