# SPDX-License-Identifier: BSD-2-Clause
import os
import shutil
import sys
from pathlib import Path

import pytest

# cocotb benches are imported by module name (`tests.benches.NAME`), here and,
# through the cocotb runner (which passes on sys.path), in the simulator.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

# CI runs the same examples every time (a red CI must be reproducible); a
# developer's runs explore new ones. Either way a failure prints its seed.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def tshark():
    """Path of tshark: the interop tests skip without it on a developer machine, but
    fail in CI (``CI`` set), where `.ci/run` installs it and a skip would hide a gap."""
    path = shutil.which("tshark")
    if path is None:
        reason = "tshark is not installed (Debian/Ubuntu: apt-get install tshark)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the interop tests")
        pytest.skip(reason)
    return path
