# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 interop with strongSwan, in network namespaces this test makes.

First the harness against itself: charon <-> charon (CHILD_SA installed both
sides, ping across the tunnel, rekey from either side under a ping flow with no
loss), which proves the namespaces, the configs and the ping before espnic is
in the picture. Then ``espnic ike`` against charon (see the tests below).

Skipped where namespaces or strongSwan are missing; in CI (``CI`` set) that is a
failure instead, as with tshark: ``.ci/run`` installs the packages.
"""

from __future__ import annotations

import os

import pytest

from .strongswan import (Charon, CharonConfig, Topology, finish_ping, log_tail, missing_tools,
                         ping, start_ping)

pytestmark = pytest.mark.slow

PROPOSALS = {"aes128gcm16": ("AES_GCM_16", 128), "aes256gcm16": ("AES_GCM_16", 256)}
PSK = "espnic interop test key, not a secret"


@pytest.fixture(scope="module")
def strongswan():
    """Skip (fail in CI) where strongSwan or network namespaces are missing."""
    reason = missing_tools()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the strongSwan interop tests")
        pytest.skip(reason)


@pytest.fixture
def logs(tmp_path):
    """The test's directory; charon's logs there are printed when the test ends (pytest
    shows them for a failure)."""
    yield tmp_path
    print(log_tail(*sorted(tmp_path.glob("*/charon.log")), *sorted(tmp_path.glob("*.log"))))


def charon_pair(topology, logs, esp: str, **options):
    """Charon configs for both sides of ``topology``, the same proposals and PSK."""
    left = CharonConfig(topology.left, topology.right, psk=PSK, esp_proposals=esp, **options)
    right = CharonConfig(topology.right, topology.left, psk=PSK, esp_proposals=esp, **options)
    return Charon(left, logs / "left"), Charon(right, logs / "right")


def check_pair(left_children, right_children, esp: str):
    """One CHILD_SA each side, the negotiated algorithm, each side's inbound SPI the
    other's outbound, UDP-encapsulated (kernel-libipsec)."""
    assert len(left_children) == 1 and len(right_children) == 1, (left_children, right_children)
    (a,), (b,) = left_children, right_children
    assert (a.encryption, a.key_size) == PROPOSALS[esp]
    assert (b.encryption, b.key_size) == PROPOSALS[esp]
    assert (a.spi_in, a.spi_out) == (b.spi_out, b.spi_in)
    assert a.mode == b.mode == "TUNNEL" and a.encap and b.encap


# -- the harness against itself -------------------------------------------------------------

@pytest.mark.parametrize("esp", list(PROPOSALS))
def test_charon_to_charon(strongswan, logs, esp):
    with Topology() as net:
        left, right = charon_pair(net, logs, esp)
        with left, right:
            left.initiate()
            check_pair(left.children(), right.wait_children(), esp)
            result = ping(net.left.ns, net.left.inner, net.right.inner, count=5, interval=0.05)
            assert result["answered"] == list(range(5))
            (child,) = right.children()
            assert child.packets_in == child.packets_out == 5


@pytest.mark.parametrize("rekeyer,what", [("left", "child"), ("right", "child"),
                                          ("right", "ike")])
def test_charon_rekey_under_ping(strongswan, logs, rekeyer, what):
    """Rekey by either side while pings flow: every ping answered, new SPIs."""
    with Topology() as net:
        left, right = charon_pair(net, logs, "aes128gcm16")
        with left, right:
            left.initiate()
            (before,) = right.wait_children()
            flow = start_ping(net.left.ns, net.left.inner, net.right.inner, count=60,
                              interval=0.02)
            try:
                ping_started = ping(net.right.ns, net.right.inner, net.left.inner, count=1)
                assert ping_started["answered"] == [0]
                side = left if rekeyer == "left" else right
                if what == "child":
                    side.rekey_child()
                else:
                    side.rekey_ike()
            finally:
                result = finish_ping(flow)
            assert result["answered"] == list(range(60))
            after = right.wait_children()
            if what == "child":
                assert len(after) == 1 and after[0].spi_in != before.spi_in
            else:
                assert [ike["uniqueid"] for ike in right.list_sas()] != ["1"]
            check_pair(left.children(), after, "aes128gcm16")
