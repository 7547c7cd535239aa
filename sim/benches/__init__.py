# SPDX-License-Identifier: BSD-2-Clause
"""cocotb benches that ship with the package (used by tests, benchmarks and demos)."""

import threading
import traceback

__all__ = ["start_host"]


def start_host(name: str, session, finish) -> tuple[threading.Thread, dict]:
    """Run ``session()``, the host driver's side of a bench, in a daemon thread beside the
    simulation, and ``finish()`` when it ends, however it ends (it tells the simulated
    link the host is done, so the simulation's side stops waiting). Returns the started
    thread and its outcome: ``outcome["result"]``, what ``session`` returned, or
    ``outcome["error"]``, its traceback, for the simulation's side to report."""
    outcome = {}

    def run():
        try:
            outcome["result"] = session()
        except BaseException:            # reported by the simulation's side
            outcome["error"] = traceback.format_exc()
        finally:
            finish()

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    return thread, outcome
