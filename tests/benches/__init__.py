# SPDX-License-Identifier: BSD-2-Clause
"""cocotb benches, run through espnic.sim.cocotb_runner.run_cocotb()."""
