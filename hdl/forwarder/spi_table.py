# SPDX-License-Identifier: BSD-2-Clause
"""The inbound filter: exact match on (SPI, destination address, encapsulation).

:class:`SpiTable` is a bucketed hash table in block RAM: ``entries / ways``
buckets of ``ways`` entries, one bucket a memory row, so a lookup is one read
(one probe) and all of a bucket's ways are compared at once. The bucket is an
H3 hash of the key (each index bit the parity of a fixed random subset of the
key's bits: a few LUTs per bit, no multiplier); :func:`bucket_of` computes the
same in Python for the model and the host.

Host operations (:data:`SPI_OP`) change one entry each, atomically: an entry is
one way of a row, written with one write (the memory's write granularity is
an entry), so a lookup sees the old entry or the new, never a mix. ``INSERT``
is refused with ``COLLISION`` when the key is already in the table (a second
SA for the same SPI and destination would make inbound steering ambiguous)
and with ``FULL`` when the key's bucket has no free way; ``REMOVE`` zeroes
the entry; ``REPLACE`` changes the value of an existing key. A miss on lookup
is ``hit = 0``: the forwarder fails closed.
"""

import random

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..packet.credit import ResultQueue

__all__ = ["SPI_KEY", "SpiOp", "SpiStatus", "spi_table_layouts", "bucket_of", "SpiTable"]

#: What an inbound packet is looked up by. ``udp``: RFC 3948 UDP-encapsulated.
SPI_KEY = data.StructLayout({
    "spi": 32,
    "dst": 128,      # wire order, IPv4 in the first 4 bytes
    "udp": 1,
})

#: The hash's fixed random subsets: one mask per index bit, the same in gateware and Python.
_HASH_SEED = 0x5e5_1dea


class SpiOp(enum.Enum, shape=2):
    INSERT  = 0
    REMOVE  = 1
    REPLACE = 2


class SpiStatus(enum.Enum, shape=2):
    OK        = 0
    COLLISION = 1   # INSERT: the key is there already
    FULL      = 2   # INSERT: its bucket has no free way
    NOT_FOUND = 3   # REMOVE / REPLACE: no such key


def _hash_masks(index_bits: int) -> list[int]:
    rng = random.Random(_HASH_SEED)
    return [rng.getrandbits(SPI_KEY.size) for _ in range(index_bits)]


def bucket_of(key: int, buckets: int) -> int:
    """The bucket of `key` (the value of a :data:`SPI_KEY`) in a table of `buckets` rows."""
    index = 0
    for bit, mask in enumerate(_hash_masks((buckets - 1).bit_length())):
        index |= (bin(key & mask).count("1") & 1) << bit
    return index


def spi_table_layouts(value: data.StructLayout) -> dict:
    """The entry, operation, reply and lookup result layouts for a table of `value`s."""
    return {
        "ENTRY": data.StructLayout({"valid": 1, "key": SPI_KEY, "value": value}),
        "OP": data.StructLayout({"op": SpiOp, "key": SPI_KEY, "value": value}),
        "REPLY": data.StructLayout({"status": SpiStatus}),
        "RESULT": data.StructLayout({"hit": 1, "value": value}),
    }


class SpiTable(wiring.Component):
    """Exact-match table of inbound SAs (see the module docstring).

    Parameters
    ----------
    entries : capacity, a power of two of at least ``ways`` (64 on iCE40, 4096 on ECP5).
    ways : entries per bucket (1 to 8, a power of two): more ways, fewer ``FULL``.
    value : the layout an entry maps its key to (the forwarder's: engine and SA slot).

    Latency and throughput: a lookup's result is offered 5 cycles after the
    lookup is taken (3 of key register, read and compare, 2 of the result
    queue's), one lookup per cycle. A host operation takes the read port
    for 3 cycles once the lookup in flight has left (reply 5 cycles after the
    operation is taken, with no lookup waiting): its bucket is read, compared
    with its key, and the way and status chosen a cycle after the compare.
    """

    def __init__(self, *, entries: int, ways: int = 4, value: data.StructLayout):
        if type(ways) is not int or ways not in (1, 2, 4, 8):
            raise ValueError(f"ways must be 1, 2, 4 or 8, not {ways!r}")
        if type(entries) is not int or entries < max(ways, 2) or entries & (entries - 1):
            raise ValueError(f"entries must be a power of two of at least {max(ways, 2)}, "
                             f"not {entries!r}")
        if not isinstance(value, data.Layout):
            raise TypeError(f"value must be a data layout, not {value!r}")
        self._entries, self._ways = entries, ways
        self._layouts = spi_table_layouts(value)
        super().__init__({
            "lookup":     In(stream.Signature(SPI_KEY)),
            "result":     Out(stream.Signature(self._layouts["RESULT"])),
            "host":       In(stream.Signature(self._layouts["OP"])),
            "host_reply": Out(stream.Signature(self._layouts["REPLY"])),
            "used":       Out(range(entries + 1)),
        })

    @property
    def buckets(self) -> int:
        return self._entries // self._ways

    def elaborate(self, platform):
        m = Module()
        ways, buckets = self._ways, self.buckets
        entry = self._layouts["ENTRY"]
        m.submodules.rows = rows = Memory(shape=unsigned(entry.size * ways), depth=buckets,
                                          init=[])
        rd = rows.read_port()
        wr = rows.write_port(granularity=entry.size)
        row = [entry(rd.data[entry.size * k:entry.size * (k + 1)]) for k in range(ways)]

        def bucket(key):
            masks = _hash_masks((buckets - 1).bit_length())
            return Cat((key.as_value() & mask).xor() for mask in masks) if masks else C(0, 1)

        def matches(key):
            return [way.valid & (way.key.as_value() == key.as_value()) for way in row]

        # ---- lookups: key, read, compare, result ---------------------------------------
        # The key is registered before its hash: the hash's parity trees then start from
        # flip-flops, not from the parser's LUT-RAM record FIFO, whose outputs fanned
        # out into them and into the read address's choice between a lookup's bucket
        # and a host operation's (the router's most congested nets after the policy
        # table's). The steps never stop (no enable on their registers: see
        # `packet/credit.py`); a lookup is taken only with a place for its result.
        m.submodules.results = results = ResultQueue(self._layouts["RESULT"], latency=3)
        wiring.connect(m, results.o, wiring.flipped(self.result))
        host_owns = Signal()           # the host operation has the read port
        taken = self.lookup.valid & self.lookup.ready
        key_a, key_b = Signal(SPI_KEY), Signal(SPI_KEY)
        valid_a, valid_b = Signal(), Signal()
        m.d.comb += [
            self.lookup.ready.eq(results.room & ~host_owns),
            results.taken.eq(taken),
            rd.addr.eq(bucket(key_a)),
        ]
        hit_way = matches(key_b)
        m.d.sync += [key_a.eq(self.lookup.payload),
                     valid_a.eq(taken),
                     key_b.eq(key_a),
                     valid_b.eq(valid_a),
                     results.i_valid.eq(valid_b),
                     results.i.hit.eq(Cat(hit_way).any()),
                     results.i.value.eq(0)]
        for k in range(ways):
            with m.If(hit_way[k]):
                m.d.sync += results.i.value.eq(row[k].value)

        # ---- host operations ----------------------------------------------------------
        op = Signal.like(self.host.payload)
        op_bucket = Signal(range(buckets))      # its hash, taken with it
        status = Signal(SpiStatus)
        # The bucket's ways compared with the operation's key, registered: the choice of
        # way and status a cycle later does not follow the wide compare in one cycle.
        found = Signal(ways)
        free = Signal(ways)
        target = Signal(range(ways))
        new = Signal(entry)
        with m.FSM(name="host"):
            with m.State("IDLE"):
                m.d.comb += self.host.ready.eq(1)
                with m.If(self.host.valid):
                    m.d.sync += [op.eq(self.host.payload),
                                 op_bucket.eq(bucket(self.host.payload.key))]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                # No new lookup; the one in the key stage has its read first (the read
                # stage's has its row already).
                m.d.comb += host_owns.eq(1)
                with m.If(~valid_a):
                    m.d.comb += [rd.addr.eq(op_bucket), rd.en.eq(1)]
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                m.d.comb += [host_owns.eq(1), rd.en.eq(0)]
                m.d.sync += [found.eq(Cat(matches(op.key))),
                             free.eq(Cat(~way.valid for way in row))]
                m.next = "CHOOSE"
            with m.State("CHOOSE"):
                m.d.comb += [host_owns.eq(1), rd.en.eq(0)]
                # The first matching way, else the first free one.
                for k in reversed(range(ways)):
                    with m.If(found[k] | ~found.any() & free[k]):
                        m.d.sync += target.eq(k)
                with m.Switch(op.op):
                    with m.Case(SpiOp.INSERT):
                        m.d.sync += [new.valid.eq(1), new.key.eq(op.key), new.value.eq(op.value),
                                     status.eq(Mux(found.any(), SpiStatus.COLLISION,
                                                   Mux(free.any(), SpiStatus.OK,
                                                       SpiStatus.FULL)))]
                    with m.Case(SpiOp.REMOVE):
                        m.d.sync += [new.eq(0),
                                     status.eq(Mux(found.any(), SpiStatus.OK,
                                                   SpiStatus.NOT_FOUND))]
                    with m.Case(SpiOp.REPLACE):
                        m.d.sync += [new.valid.eq(1), new.key.eq(op.key), new.value.eq(op.value),
                                     status.eq(Mux(found.any(), SpiStatus.OK,
                                                   SpiStatus.NOT_FOUND))]
                m.next = "WRITE"
            with m.State("WRITE"):
                # One entry, one write: a lookup sees it whole or not at all.
                with m.If(status == SpiStatus.OK):
                    m.d.comb += [wr.addr.eq(op_bucket), wr.data.eq(Cat(*[new] * ways)),
                                 wr.en.eq(1 << target)]
                    with m.Switch(op.op):
                        with m.Case(SpiOp.INSERT):
                            m.d.sync += self.used.eq(self.used + 1)
                        with m.Case(SpiOp.REMOVE):
                            m.d.sync += self.used.eq(self.used - 1)
                m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += [self.host_reply.payload.status.eq(status), self.host_reply.valid.eq(1)]
                with m.If(self.host_reply.ready):
                    m.next = "IDLE"
        return m
