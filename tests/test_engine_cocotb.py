# SPDX-License-Identifier: BSD-2-Clause
"""The ESP engine in Verilator (cocotb), both datapath profiles, against the model.

The same checks as ``tests/test_engine.py`` (Amaranth's simulator) on the
engine's Verilog: output packets byte for byte in each direction, every slot's
counters and record ``seq`` read over the host port, the engine's ``no_sa`` and
``unknown_spi``, the events of each slot. Traffic covers both directions, both
modes, IPv4 and IPv6, ESN and NAT-T on and off (outbound NAT-T over IPv6 with
its UDP checksum filled in), replayed and forged packets,
payloads of 0 to 1500 bytes, several SAs interleaved, idle input cycles and
back-pressure on the output. Inbound packets are sealed by a peer model holding
the outbound twin of each inbound SA.

The first test of a profile builds the engine's Verilog with Verilator
(minutes); every later run reuses the build, cached by the engine's parameters
and the content of ``hdl/``.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.sim.engine_job import run_engine_cocotb
from tests.esp_cases import config, plain_packet
from tests.test_engine import _NO_LIMITS, SLOTS, _flip, _peer, _seal, check_engine_run

# The compact engine only: the fast one's Verilator build and runs cost about six
# minutes of CI's 45 (its Verilog is the same generator's output as the compact
# one's; test_engine.py checks the fast engine in Amaranth's simulator, and
# test_gcm.py its GCM core in Verilator). `pytest.param("fast")` brings it back.
PROFILES = [pytest.param("compact")]


def _check(run):
    check_engine_run(run)
    # The traffic keeps to what the engine supports: nothing may be refused.
    assert run.engine_counters["unsupported"] == 0


def _traffic(sa_configs, packets):
    """``[(slot, packet)]`` for ``packets`` of ``(slot, inner IP version, payload size,
    kind)``: outbound ones as cleartext; inbound ones sealed by the peer, and for
    kind ``"replay"`` the slot's previous packet again, for ``"forged"`` one with a
    flipped ICV bit (the peer used up its sequence number)."""
    peer = _peer(sa_configs)
    last, traffic = {}, []
    for slot, version, size, kind in packets:
        sa = sa_configs.get(slot)
        plain = plain_packet(version, size)
        if sa is None or sa.direction == "out":
            traffic.append((slot, plain))
        elif kind == "replay" and slot in last:
            traffic.append((slot, last[slot]))
        else:
            sealed = _seal(peer, slot, plain)
            last[slot] = sealed
            traffic.append((slot, _flip(sealed, len(sealed) - 3) if kind == "forged" else sealed))
    return traffic


# Sets of four SAs that between them cover each feature in each direction.
_FIXED_SAS = {
    "a": {
        0: config("out", version=4, natt=True, esn=True, spi=0x1000, lifetime=_NO_LIMITS),
        1: config("out", version=6, mode="transport", spi=0x1001,
                  lifetime={**_NO_LIMITS, "packets_soft": 2}),
        2: config("in", version=6, esn=True, seq=2**32 - 2, window=64, spi=0x1002,
                  lifetime=_NO_LIMITS),
        3: config("in", version=4, natt=True, spi=0x1003, lifetime=_NO_LIMITS),
    },
    "b": {
        0: config("out", version=6, spi=0x2000, lifetime=_NO_LIMITS),
        1: config("out", version=4, mode="transport", natt=True, esn=True, spi=0x2001,
                  lifetime=_NO_LIMITS),
        2: config("in", version=4, esn=True, spi=0x2002, lifetime={**_NO_LIMITS,
                                                                  "bytes_soft": 1000}),
        3: config("in", version=6, spi=0x2003, lifetime=_NO_LIMITS),
    },
    "c": {
        0: config("in", version=4, mode="transport", natt=True, esn=True, spi=0x3000,
                  lifetime=_NO_LIMITS),
        1: config("in", version=6, mode="transport", seq=1000, spi=0x3001,
                  lifetime={**_NO_LIMITS, "packets_soft": 3, "packets_hard": 5}),
        2: config("in", version=6, natt=True, spi=0x3002, lifetime=_NO_LIMITS),
        3: config("out", version=4, spi=0x3003, lifetime=_NO_LIMITS),
    },
}


def _inner_versions(sa):
    """The inner IP versions a slot's packets may have: transport mode carries the
    SA's own (its addresses are the packets'), tunnel mode either."""
    if sa is None or sa.mode == "tunnel":
        return (4, 6)
    return (6 if ":" in sa.src else 4,)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("sas", sorted(_FIXED_SAS))
def test_engine_cocotb_fixed(profile, sas):
    """Four SAs interleaved, sizes 0, 1, 57, 1400 per slot and inner version, then a
    replayed and a forged packet on each inbound SA, with idle input cycles and
    back-pressure."""
    sa_configs = _FIXED_SAS[sas]
    packets = [(slot, version, size, "good")
               for size in (0, 1, 57, 1400)
               for slot, sa in sa_configs.items()
               for version in _inner_versions(sa)]
    inbound = [slot for slot, sa in sa_configs.items() if sa.direction == "in"]
    for slot in inbound:
        version = _inner_versions(sa_configs[slot])[-1]
        packets += [(slot, version, 20, "replay"), (slot, version, 30, "forged"),
                    (slot, version, 3, "good")]
    traffic = _traffic(sa_configs, packets)
    run = run_engine_cocotb(sa_configs, traffic, profile=profile, slots=SLOTS, stall=0.4,
                            gap=0.2, seed=7)
    _check(run)
    # The traffic is what it says: each inbound SA saw a replay and a forgery.
    assert run.reasons.count("replay") == run.reasons.count("auth_fail") == len(inbound)
    assert run.outputs[False] and run.outputs[True]


@st.composite
def _sa_strategy(draw, slot):
    """An SA the engine supports for `slot` (its own SPI), or None (an empty slot)."""
    if draw(st.integers(0, 7)) == 0:
        return None
    direction = draw(st.sampled_from(["out", "in"]))
    mode = draw(st.sampled_from(["tunnel", "transport"]))
    version = draw(st.sampled_from([4, 6]))
    esn = draw(st.booleans())
    natt = draw(st.booleans())
    extra = {}
    if direction == "in":
        # Start near the 32-bit boundary sometimes: ESN carries, the plain SA wraps.
        extra["seq"] = draw(st.sampled_from([0, 1000, 2**32 - 3]) if esn
                            else st.sampled_from([0, 1000]))
        extra["window"] = draw(st.sampled_from([64, 1024]))
    lifetime = dict(_NO_LIMITS)
    if draw(st.booleans()):
        lifetime.update(bytes_soft=draw(st.integers(1, 3000)),
                        packets_hard=draw(st.integers(0, 6)))
    return config(direction, version=version, mode=mode, esn=esn, natt=natt,
                  spi=0x3000 + slot, lifetime=lifetime, **extra)


@st.composite
def _case(draw):
    sa_configs = {slot: sa for slot in range(SLOTS)
                  if (sa := draw(_sa_strategy(slot))) is not None}
    count = draw(st.integers(1, 8))
    packets = []
    for _ in range(count):
        slot = draw(st.integers(0, SLOTS - 1))
        version = draw(st.sampled_from(_inner_versions(sa_configs.get(slot))))
        size = draw(st.one_of(st.integers(0, 64), st.integers(0, 1500)))
        kind = draw(st.sampled_from(["good", "good", "replay", "forged"]))
        packets.append((slot, version, size, kind))
    return sa_configs, packets


@pytest.mark.parametrize("profile", PROFILES)
@settings(max_examples=int(os.environ.get("ESPNIC_EXAMPLES", "8")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=_case(), stall=st.sampled_from([0.0, 0.3, 0.7]), gap=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 2**16))
def test_engine_cocotb_random(profile, case, stall, gap, seed):
    """Hypothesis-chosen SAs (direction, mode, IP version, ESN, NAT-T, window,
    lifetimes, empty slots) and traffic (slot order, inner version, payloads
    0..1500 bytes, replays, forgeries), with random idle input cycles and output
    back-pressure."""
    sa_configs, packets = case
    run = run_engine_cocotb(sa_configs, _traffic(sa_configs, packets), profile=profile,
                            slots=SLOTS, stall=stall, gap=gap, seed=seed)
    _check(run)
