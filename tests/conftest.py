# SPDX-License-Identifier: BSD-2-Clause
import os
import sys
from pathlib import Path

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
