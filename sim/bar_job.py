# SPDX-License-Identifier: BSD-2-Clause
"""The host driver on a device's BAR: ``EspNicDevice(link="bar")`` in Verilator, the
real :class:`~espnic.host.device.Device` over :class:`~espnic.host.transport.bar.BarLink`.

:func:`run_bar` runs the cocotb bench :mod:`espnic.sim.benches.bar` (one build of
:data:`DEVICE`, cached like every bench); in the simulator's process a thread runs
:func:`host_session` on a ``BarLink`` whose bar does bus cycles in the simulation,
and its result comes back (pickled). The same :func:`host_session` runs on any other
:class:`Device` (``model://``), so a test compares the two.

What the session does: the capability block; SAs written, read back (every slot,
key and salt read as zero) and deleted; SPI-table entries inserted, refused as
collisions and removed; a policy rule and a route; the BAR's own counters around
a write to a read-only register and a read of an undefined offset (the ``bar`` of
a ``BarLink`` only); then, given a :class:`~.nic_job.NicSetup` and traffic, what
:func:`~.link_job.traffic_over_link` sees (every packet out through the mailbox,
the counters, the SA counters).
"""

import pickle
import tempfile
from pathlib import Path

from ..hdl.bridge.regmap import nic_parameters
from ..hdl.engine.sa import SaConfig, sa_layout
from ..hdl.forwarder.policy import PolicyAction
from ..hdl.forwarder.spi_table import SpiOp

__all__ = ["DEVICE", "ANSWER_TIMEOUT", "design", "host_session", "run_bar"]

#: The device the bench runs (``espnic sim``'s default data plane, on a BAR).
DEVICE = {"engines": 1, "ports": 1, "profile": "compact"}
#: Seconds a doorbell may stay busy (wall clock): far more than the simulation takes.
ANSWER_TIMEOUT = 600.0

_KEY128 = "000102030405060708090a0b0c0d0e0f"
_KEY256 = "00112233445566778899aabbccddeeff" * 2


def design(**nic_params) -> tuple[str, dict]:
    """Top-level name and ``EspNicDevice`` parameters of the BAR device for ``nic_params``."""
    params = nic_parameters(**nic_params)
    name = f"bar_{params['profile']}_{params['engines']}x{params['ports']}"
    return name, {"link": "bar", "packets": "link", **params}


def _configs(window: int) -> dict:
    return {3: SaConfig(spi=0x2003, direction="out", mode="tunnel", key=_KEY256,
                        salt="01020304", src="192.0.2.1", dst="192.0.2.2", window=window),
            5: SaConfig(spi=0x2005, direction="in", mode="transport", key=_KEY128,
                        salt="a1b2c3d4", src="192.0.2.2", dst="192.0.2.1", window=window)}


def _rule(action: PolicyAction) -> dict:
    return {"valid": True, "ipv6": False, "priority": 3, "src": bytes(16), "src_len": 0,
            "dst": bytes([198, 51, 100, 0]) + bytes(12), "dst_len": 24, "any_proto": True,
            "proto": 0, "sport_lo": 0, "sport_hi": 65535, "dport_lo": 0, "dport_hi": 65535,
            "action": action.value, "value": {"engine": 0, "slot": 0}}


def host_session(device, setup=None, traffic=(), *, timeout: float = ANSWER_TIMEOUT) -> dict:
    """What the host sees of ``device`` in the session the module docstring describes."""
    from ..host.config import spi_key
    from .link_job import traffic_over_link

    seen = {"params": device.params}
    window = device.params["window"]
    layout = sa_layout(window)
    configs = _configs(window)
    for slot, config in configs.items():
        device.write_sa(0, slot, config.to_record(layout))
    records = [device.read_sa(0, slot).record for slot in range(device.params["slots"])]
    seen["keys"] = [(int(r.key), int(r.salt)) for r in records]
    seen["records"] = [r.as_bits() for r in records]
    inbound = spi_key(configs[5])
    seen["spi"] = [device.spi_entry(0, op, inbound, 0, 5).name
                   for op in (SpiOp.INSERT, SpiOp.INSERT, SpiOp.REMOVE, SpiOp.INSERT)]
    seen["policy"] = [device.write_policy(0, 0, _rule(PolicyAction.BYPASS)),
                      device.write_route(0, valid=True, ipv6=False,
                                         dst=bytes([198, 51, 100, 0]) + bytes(12),
                                         length=24, port=0)]
    device.delete_sa(0, 3)
    seen["deleted"] = device.read_sa(0, 3).record.as_bits()
    device.write("pause", 1)
    seen["pause"] = device.read("pause")
    device.write("pause", 0)
    seen["counters"] = device.counters()
    bar = getattr(device.link, "bar", None)
    if bar is not None:
        # The BAR's own: a write to a read-only word and a read of nothing are counted
        # (in bad_writes, which bad_command also reads, and bad_reads), and do nothing.
        bar_layout = device.link.layout
        before = (bar.read32(4 * bar_layout.bad_reads), bar.read32(4 * bar_layout.bad_writes))
        idle = device.regmap.register("idle").address
        bar.write32(4 * idle, 0)
        unused = 4 * (bar_layout.bad_writes + 1)
        seen["bar"] = {"unused_reads": bar.read32(unused),
                       "counted": (bar.read32(4 * bar_layout.bad_reads) - before[0],
                                   bar.read32(4 * bar_layout.bad_writes) - before[1]),
                       "bad_command": device.read("bad_command"),
                       "payload_reads": [bar.read32(4 * (bar_layout.in_window(0).payload + n))
                                         for n in range(bar_layout.in_window(0).words)]}
        seen["counters_after"] = device.counters()
    if setup is not None:
        seen["traffic"] = traffic_over_link(device, setup, list(traffic), timeout=timeout)
    return seen


def run_bar(setup=None, traffic=(), *, simulator: str | None = None,
            timeout: float | None = None) -> dict:
    """:func:`host_session` on the simulated BAR device (:data:`DEVICE`); its result."""
    from ..hdl.device import EspNicDevice
    from .cocotb_runner import run_job

    name, params = design(**DEVICE)
    with tempfile.TemporaryDirectory(prefix="espnic-bar-") as tmp:
        work, seen = Path(tmp, "work.pickle"), Path(tmp, "seen.pickle")
        work.write_bytes(pickle.dumps((setup, list(traffic))))
        run_job(EspNicDevice, name=name, params=params, test_module="espnic.sim.benches.bar",
                job={"work": str(work), "seen": str(seen)}, simulator=simulator,
                timeout=timeout)
        return pickle.loads(seen.read_bytes())
