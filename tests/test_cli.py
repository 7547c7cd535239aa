# SPDX-License-Identifier: BSD-2-Clause
import subprocess
import sys

import pytest

from espnic.host.cli import main


@pytest.mark.parametrize("command", ["ike"])
def test_unbuilt_commands_say_so(command, capsys):
    assert main([command, "--anything"]) == 2
    assert capsys.readouterr().err.startswith(f"espnic: not supported: `espnic {command}`")


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "espnic.host.cli", "ike"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not supported" in done.stderr
