# SPDX-License-Identifier: BSD-2-Clause
import subprocess
import sys

from espnic.host.cli import main


def test_ike_needs_its_config(capsys):
    assert main(["ike"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("espnic ike: ") and "--config" in err and len(err.splitlines()) == 1


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "espnic.host.cli", "ike"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--config" in done.stderr
