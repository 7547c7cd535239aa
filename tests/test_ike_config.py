# SPDX-License-Identifier: BSD-2-Clause
"""The ``espnic ike`` config (host/ike/config.py) and the command itself: the example
loads, every mistake is one line naming the field, no secret in any message; the
daemon as a process over a device server negotiates with an in-process daemon and,
on SIGTERM, deletes its IKE SA (the peer is told)."""

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from espnic.host.config import ConfigError
from espnic.host.ike import ChildDown, IkeDaemon
from espnic.host.ike.config import load_ike_config, parse_ike_config
from tests.model_server import ModelServer
from tests.test_ike_exchange import ike_config, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ike.toml"

PEER = """
[[peer]]
name = "b"
address = "192.0.2.2"
psk_env = "K"
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
"""


def test_example_config_loads(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "site-b.psk").write_text("a long random secret\n")
    config = parse_ike_config(EXAMPLE.read_text(), source="ike.toml", base=tmp_path,
                              environ={"ESPNIC_PSK_SITE_C": "another secret"})
    b, c = config.peers
    assert (b.name, b.psk, b.start, b.port) == ("site-b", b"a long random secret", "initiate", 500)
    assert [s.name for s in b.esp_proposals] == ["aes128gcm16", "aes256gcm16-esn"]
    assert [s.dh_group for s in b.ike_proposals] == [19, 14, 31]
    assert c.psk == b"another secret" and c.child_rekey_time == 1800
    assert "secret" not in repr(config)
    assert config.delete_rekeyed_delay == 5.0         # strongSwan's default
    assert parse_ike_config("[ike]\ndelete_rekeyed_delay = 0\n").delete_rekeyed_delay == 0.0


@pytest.mark.parametrize("text, message", [
    ("[ike]\nport = 70000\n", "ike.port: must be an integer from 0 to 65535"),
    ("[ike]\nlisten = [\"nowhere\"]\n", "ike.listen: not an IP address"),
    ("[ike]\nsurprise = 1\n", "ike.surprise: unknown field"),
    ("[ike]\ndelete_rekeyed_delay = -1\n", "ike.delete_rekeyed_delay: must be a positive"),
    (PEER.replace('address = "192.0.2.2"', 'address = "b.example"'), "peer[0].address: not an IP"),
    (PEER + 'ike_proposals = ["aes128gcm16-sha1-modp1024"]\n', "peer[0].ike_proposals: "),
    (PEER + 'esp_proposals = ["aes128cbc"]\n', "peer[0].esp_proposals: "),
    (PEER + 'start = "now"\n', "peer[0].start: must be"),
    (PEER.replace('psk_env = "K"', 'psk_env = "UNSET"'), "peer[0].psk_env: environment variable"),
    (PEER.replace('psk_env = "K"', 'psk = "file:missing.psk"'), "peer[0].psk: cannot read"),
    (PEER.replace('remote_ts = ["10.2.0.0/16"]', ''), "peer[0].remote_ts: required"),
    (PEER + "rekey_time = 100\nlife_time = 50\n", "peer[0].life_time: 50 is shorter"),
    (PEER + PEER, "peer[1].name: 'b' used twice"),
])
def test_config_mistakes_are_one_line(text, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        parse_ike_config(text, source="c.toml", base=tmp_path, environ={"K": "the key"})
    assert message in str(error.value) and "\n" not in str(error.value)
    assert "the key" not in str(error.value)


def test_inline_psk_warns_without_the_key(caplog):
    caplog.set_level(logging.WARNING, "espnic.ike")
    config = parse_ike_config(PEER.replace('psk_env = "K"', 'psk = "inline secret"'))
    assert config.peers[0].psk == b"inline secret"
    assert "inline" in caplog.text and "inline secret" not in caplog.text


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_ike_config(tmp_path / "nope.toml")


def test_espnic_ike_command_negotiates_and_deletes_on_sigterm(tmp_path):
    (tmp_path / "psk").write_text("correct horse battery staple\n")
    config = tmp_path / "ike.toml"
    config.write_text("""[ike]
listen = ["127.0.0.1"]
port = 0
port_natt = 0
[[peer]]
name = "a"
address = "127.0.0.1"
psk = "file:psk"
local_id = "gw-b.example"
remote_id = "gw-a.example"
local_ts = ["10.2.0.0/16"]
remote_ts = ["10.1.0.0/16"]
natt = "detect"
""")
    server = ModelServer(engines=2, ports=2)
    env = dict(os.environ, PYTHONWARNINGS="error")
    process = subprocess.Popen(
        [sys.executable, "-m", "espnic.host.cli", "ike", "--config", str(config), "--device",
         server.url, "--db", str(tmp_path / "sa.db"), "-v"],
        stderr=subprocess.PIPE, text=True, env=env)
    events = []
    daemon = None
    try:
        line = ""
        while "listening on" not in line:
            line = process.stderr.readline()
            assert line, "espnic ike ended before listening"
        port = int(re.search(r"ports (\d+) and", line).group(1))
        conf = ike_config("a", "b")
        conf.peer("b").port = port
        daemon = IkeDaemon(conf, on_child=events.append)
        daemon.start()
        daemon.initiate("b")
        wait_for(lambda: len(daemon.children()) == 1, what="the CHILD_SA")
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: any(isinstance(e, ChildDown) for e in events), what="the delete")
        assert process.wait(timeout=10) == 0
        err = process.stderr.read()
        assert "CHILD_SA" in err and "Traceback" not in err
        for event in events[:1]:
            for sa in (event.inbound, event.outbound):
                assert sa.key not in err and sa.salt not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if daemon is not None:
            daemon.stop()
        server.close()


def test_espnic_ike_config_mistake_is_one_line(tmp_path, capsys):
    from espnic.host.cli import main
    config = tmp_path / "bad.toml"
    config.write_text("[ike]\nport = -1\n")
    assert main(["ike", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == f"espnic ike: {config}: ike.port: must be an integer from 0 to 65535, not -1\n"
