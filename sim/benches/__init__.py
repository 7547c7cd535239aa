# SPDX-License-Identifier: BSD-2-Clause
"""cocotb benches that ship with the package (used by tests, benchmarks and demos)."""
