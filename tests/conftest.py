# SPDX-License-Identifier: BSD-2-Clause
import sys
from pathlib import Path

# cocotb benches are imported by module name (`tests.benches.NAME`), here and,
# through the cocotb runner (which passes on sys.path), in the simulator.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
