# SPDX-License-Identifier: BSD-2-Clause
"""One ESP engine: SA table, anti-replay windows and the ESP data paths.

Each packet comes with a ``meta`` beat naming its SA slot (the classifier's
answer). With the packet's length from its first beat's IP header, the SA
table checks the SA (:class:`SaTable`) and the dispatcher sends the packet

* for an outbound SA: with the :data:`ENCAP_JOB` (sequence number allocated,
  packet accounted) to the encapsulator (:class:`EspEncap`), or discards it
  (the table counted the drop: empty slot in the engine's ``no_sa``, hard
  lifetime, draining, sequence exhausted in the SA's counters);
* for an inbound SA: to the decapsulator (:class:`EspDecap`), with the
  SPI and replay checks and the accounting around it (:class:`InboundControl`).
  Up to ``banks`` inbound packets are in flight (4 *fast*, 1 *compact*). An
  inbound packet joins those in flight only if its outcome cannot depend on
  them: its SA has ``headroom`` to its hard lifetime and no ESN; otherwise
  it is looked up again once they have been accounted, so its hard-lifetime
  check counts every earlier packet (outbound packets never wait for inbound
  ones).

The two data paths' outputs are merged a packet at a time into ``o``;
``o_inbound`` (valid with each beat) says the packet is a decapsulated one.

Packets come in through a skid buffer (a cycle) and an
:class:`Ipv4HeaderCheck`, which holds a few beats and says, once a packet's
whole IPv4 header is in, whether its header checksum is right; the facts the SA
table needs from a packet's first beat are taken as it comes in. So the dispatcher looks the next packet up while the current
one streams, and the SA table's latency is hidden. The encapsulator is given exactly the packet's IP
length: bytes past it are discarded (as the model ignores them). A packet
whose first beat shows a bad IP header (or whose IPv4 header checksum is
wrong), or which ends in its first beat before its IP length, is dropped as
``malformed`` before a sequence number is allocated. A longer packet whose
stream ends before its IP length (the engine is cut-through: its sequence
number is allocated and the packet accounted by then) is padded with zero
bytes, encrypted and *aborted*: ``o_abort`` is high with its last output
beat, the egress must discard it, and ``truncated`` counts it. Its sequence
number is used up, never reused.

A ``meta`` item with ``fence`` set is a fence's marker, which comes with no
packet (the forwarder's :class:`Classifier` and :class:`Dispatcher` make it):
the engine takes it in order with the packets' slots, waits until every
packet before it has left ``o`` or been dropped, and has been accounted, then
offers its slot on ``fenced`` (and takes nothing more until that is taken).

Host operations (``host``) go to the SA table through the engine's
:class:`SaMover` (``hdl/fabric/mover.py``); writing or deleting a slot also
(re)loads its replay window: an inbound SA with ``seq = N > 0`` starts with
every number up to N received (as ``SaConfig.to_record``'s full bitmap), any
other slot with an empty window. That takes ``ring_words + 1`` cycles, during
which no other host operation and no new packet is taken. The mover is also
the engine's end of the fabric: ``arm`` moves a slot out (its record with
key, counters and replay window, on ``state_out``) once the fences named have
passed, ``state_in`` moves one in (reported on ``migrated``), and ``hold``
marks a slot whose state is on its way (``held``, ``held_slot``: the device
keeps packets for it waiting at their ports until the import).

Outbound UDP encapsulation over IPv6 needs a real UDP checksum over the whole
ESP packet (RFC 8200): the encapsulator's output goes through a
:class:`Udp6ChecksumFill`, which holds such a packet until it is all there and
fills the checksum in (the others pass it cut-through, 2 cycles).

Not built yet, refused by the SA table before anything is allocated or
counted, and counted in ``unsupported``: outbound UDP encapsulation over IPv6
of a cleartext packet longer than :func:`udp6_fill_limit` (1,963 bytes: its ESP
packet would not fit the fill stage), and IPv6 extension headers in front of
ESP (an outbound transport-mode packet's, an inbound packet's outer header).

Throughput: the SA table needs 5 cycles per packet (its request reaches it
through a register, the request's slot is registered before it addresses the
table's memories, and its reply goes into a register), and
the dispatcher asks about the next packet as soon as the current one has taken
its job, so the data paths set the rate (``bench/engine.py``); packets of a
beat or two are bound by the lookup, 5 cycles from one ask to the next.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..gcm.layouts import BLOCK_BYTES
from ..packet.layouts import beats_as, ip_length, packet_beat
from ..packet.ipv4 import Ipv4HeaderCheck
from ..packet.merge import PacketMerger
from ..packet.register import SkidBuffer, StreamRegister, cut
from .decap import EspDecap
from .encap import EspEncap
from .inbound import InboundControl
from .protocol import IPV6_EXT_WALKED, PROTO_FRAGMENT
from .sa import REPLAY_WINDOW, Encap, IpVersion, Mode
from .sa_table import INBOUND_OVERLAP, Action, Reason, SaTable
from .udp6 import Udp6ChecksumFill
from ..fabric.link import fabric_beat
from ..fabric.mover import HOLD, MIGRATE_ARM, SaMover, slot_report

__all__ = ["EspEngine", "engine_meta"]


#: A beat leaving the engine, with whether it is a decapsulated packet's and whether
#: its packet is aborted (with its last beat).
_LEAVING = data.StructLayout({**{name: field.shape
                                 for name, field in packet_beat(BLOCK_BYTES)},
                              "inbound": 1, "abort": 1})

#: What the SA table needs to know of a packet from its first beat (the fields of its
#: request but the slot), taken as the beat comes in.
_FACTS = data.StructLayout({"bytes": 16, "ipv6": 1, "v6_ext": 1, "fragment": 1, "malformed": 1})

#: Beats the IPv4 header check holds, and first-beat facts queued: the next packets' facts
#: and verdicts are there while the current one leaves.
_CHECK_DEPTH = 8


def _first_beat_facts(beat):
    """:data:`_FACTS` of a packet, from its first beat: its IP length, IPv6, IPv6 with
    extension headers in front, a fragment (IPv4 MF or offset, IPv6 fragment header
    first), a header the model calls malformed (neither IPv4 nor IPv6, IPv4 IHL < 5
    or total length < IHL, IPv6 payload length 0, or a packet that ends in this beat
    before its IP length)."""
    octet = [beat.data[8 * k:8 * (k + 1)] for k in range(8)]
    ipv6 = octet[0][4:] == 6
    ihl_bytes = Cat(C(0, 2), octet[0][:4])
    length = ip_length(beat.data)
    bad_v4 = (octet[0][:4] < 5) | (length < ihl_bytes)
    malformed = (Mux(ipv6, length == 40, Mux(octet[0][4:] == 4, bad_v4, 1))
                 | beat.last & (beat.count < length))
    return {
        "bytes": length,
        "malformed": malformed,
        "ipv6": ipv6,
        # A packet cut before byte 6 is the decapsulator's to call malformed.
        "v6_ext": ipv6 & (beat.count > 6)
                  & Cat(octet[6] == proto for proto in IPV6_EXT_WALKED).any(),
        "fragment": Mux(ipv6, octet[6] == PROTO_FRAGMENT, Cat(octet[7], octet[6][:6]) != 0),
    }


#: Inbound buffer banks (packets in flight in the decapsulator) per GCM profile. *Fast*:
#: four, as the core's latency (about 50 cycles) is longer than a short packet; four
#: banks of 128 rows take the same four 512-row block RAMs on the ECP5 as three.
_INBOUND_BANKS = {"compact": 1, "fast": 4}


def engine_meta(slots: int) -> data.StructLayout:
    """Per-packet metadata an engine takes with each packet; with ``fence``, a fence's
    marker for that slot, which comes with no packet (see :class:`EspEngine`)."""
    return data.StructLayout({"slot": range(slots), "fence": 1})


class EspEngine(wiring.Component):
    """An ESP engine (see the module docstring).

    Parameters
    ----------
    profile : the GCM datapath profile, ``"compact"`` or ``"fast"``.
    slots : SA slots (a power of two; at least 16 on iCE40, 256 on ECP5).
    window : the largest replay window (sets the SA record layout and the
        replay unit's storage).
    """

    def __init__(self, *, profile="compact", slots: int = 16, window: int = REPLAY_WINDOW):
        self._table = SaTable(slots=slots, window=window)
        self._encap = EspEncap(profile=profile)
        # Fast: three packets in flight inbound, so taking packet N+2 in overlaps
        # packet N's ICV wait and release (docs/performance.md). Compact: the core's
        # 16 cycles per block hide the rest, and a bank is 8 more RAMs on an iCE40.
        banks = _INBOUND_BANKS[profile] if isinstance(profile, str) else 1
        self._decap = EspDecap(profile=profile, banks=banks)
        # The table's `headroom` must cover every inbound packet that can be in flight.
        assert banks + 1 <= INBOUND_OVERLAP, "the SA table's INBOUND_OVERLAP is below the banks"
        self._inbound = InboundControl(slots=slots, window=window, in_flight=banks + 1)
        self._slots, self._window = slots, window
        table = self._table.signature.members
        super().__init__({
            "meta":        In(stream.Signature(engine_meta(slots))),
            "i":           In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o":           Out(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o_inbound":   Out(1),
            "o_abort":     Out(1),
            "host":        table["host"],
            "host_reply":  table["host_reply"],
            "events":      table["events"],
            "no_sa":       Out(32),     # packets for an empty slot
            "unknown_spi": Out(32),     # inbound packets whose SPI is not their SA's
            "unsupported": Out(32),     # packets the data path cannot handle yet (see above)
            "truncated":   Out(32),     # outbound packets whose stream ended short (aborted)
            "fenced":      Out(stream.Signature(slot_report(slots))),   # fences passed
            # The fabric (hdl/fabric/mover.py): SAs moving out and in.
            "arm":         In(stream.Signature(MIGRATE_ARM(slots))),
            "hold":        In(stream.Signature(HOLD(slots))),
            "held":        Out(1),      # a slot is on hold: packets for it must wait
            "held_slot":   Out(range(slots)),
            "state_out":   Out(stream.Signature(fabric_beat(slots, window))),
            "state_in":    In(stream.Signature(fabric_beat(slots, window))),
            "migrated":    Out(stream.Signature(slot_report(slots))),
            "refused":     Out(32),     # EXPORT/IMPORT from the host, dropped
        })

    @property
    def inbound(self) -> InboundControl:
        """The inbound control (``busy``, the replay unit's storage), for testbenches."""
        return self._inbound

    @property
    def decap(self) -> EspDecap:
        """The decapsulator (its ``job``, ``settle`` and ``verdict`` streams), for testbenches."""
        return self._decap

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = self._table
        m.submodules.encap = encap = self._encap
        m.submodules.decap = decap = self._decap
        m.submodules.inbound = inbound = self._inbound
        m.submodules.merger = merger = PacketMerger(width=BLOCK_BYTES, count=2)

        wiring.connect(m, table.events, wiring.flipped(self.events))
        wiring.connect(m, inbound.account, table.account)
        # The decapsulator's ESP header and ICV result reach the inbound control
        # through registers: its length checks and bank state fed the replay unit's
        # first stage and back into the decapsulator in one cycle (the engine's
        # deepest path, docs/performance.md). A cycle more for each, once a packet.
        cut(m, "headers", StreamRegister, decap.header, inbound.header)
        wiring.connect(m, inbound.admit, decap.admit)
        cut(m, "settles", StreamRegister, decap.settle, inbound.settle)
        wiring.connect(m, inbound.settled, decap.settled)
        wiring.connect(m, decap.verdict, inbound.verdict)
        wiring.connect(m, decap.o, merger.i[1])
        m.d.comb += [
            self.no_sa.eq(table.no_sa),
            self.unknown_spi.eq(inbound.unknown_spi),
        ]

        # The host path and the fabric's end: table operations, window loads, moves.
        m.submodules.mover = mover = SaMover(slots=self._slots, window=self._window,
                                             replay=inbound.signature.members)
        wiring.connect(m, wiring.flipped(self.host), mover.host)
        wiring.connect(m, mover.host_reply, wiring.flipped(self.host_reply))
        # The mover's table operations go through a register: whether it may issue one
        # (its export's ring count, the window loads, its reply FIFO) ran through the
        # table's arbitration into its memories in one path. One register, not a skid
        # buffer: an operation is 1,252 bits, and the table takes one every few cycles
        # at most (each is a read and a write of the slot), so a second copy would buy
        # no throughput, only flip-flops and another wide enable for the router.
        cut(m, "table_ops", StreamRegister, mover.table, table.host)
        wiring.connect(m, table.host_reply, mover.table_reply)
        # Window rows reach the replay unit through a skid buffer: whether the mover
        # offers one (an import's next beat) and the unit's arbitration into the inbound
        # admission were one path. A row in it still counts as loading; a row of an
        # import is in the unit a cycle or two after the mover lifts the slot's hold
        # (loads go first there), long before a packet let through can reach its check.
        loads = cut(m, "loads", SkidBuffer, mover.load, inbound.load)
        wiring.connect(m, mover.read, inbound.read)
        wiring.connect(m, inbound.read_result, mover.read_result)
        wiring.connect(m, wiring.flipped(self.arm), mover.arm)
        wiring.connect(m, wiring.flipped(self.hold), mover.hold)
        wiring.connect(m, mover.state_out, wiring.flipped(self.state_out))
        wiring.connect(m, wiring.flipped(self.state_in), mover.state_in)
        wiring.connect(m, mover.migrated, wiring.flipped(self.migrated))
        wiring.connect(m, mover.fenced, wiring.flipped(self.fenced))
        m.d.comb += [self.refused.eq(mover.refused), self.held.eq(mover.held),
                     self.held_slot.eq(mover.held_slot)]
        loading = mover.loading | loads.o.valid
        self._mover = mover
        # Each packet's first-beat facts and IPv4 header verdict are known while the
        # packet before it still streams (the checker's FIFO holds its beats meanwhile),
        # so the dispatcher looks a packet up before its first beat is due.
        m.submodules.checked = checked = Ipv4HeaderCheck(width=BLOCK_BYTES, depth=_CHECK_DEPTH)
        m.submodules.firsts = firsts = SyncFIFO(width=_FACTS.size, depth=_CHECK_DEPTH)
        # The beats come in through a skid buffer: the queue in front reads them from
        # block RAM, whose output was the start of the checker's header sums (the
        # device's deepest path).
        m.submodules.arriving = arriving = SkidBuffer(packet_beat(BLOCK_BYTES))
        wiring.connect(m, wiring.flipped(self.i), arriving.i)
        beat = arriving.o
        first_in = beat.payload.first
        facts = Signal(_FACTS)
        m.d.comb += [
            *(facts[name].eq(value) for name, value in _first_beat_facts(beat.payload).items()),
            checked.i.payload.eq(beat.payload),
            checked.i.valid.eq(beat.valid & (firsts.w_rdy | ~first_in)),
            beat.ready.eq(checked.i.ready & (firsts.w_rdy | ~first_in)),
            firsts.w_data.eq(facts),
            firsts.w_en.eq(beat.valid & beat.ready & first_in),
        ]
        self._dispatch(m, table, encap, decap, inbound, merger, loading, checked, firsts)
        return m

    def _dispatch(self, m, table, encap, decap, inbound, merger, loading, checked, firsts):
        packets = checked.o             # the beats; a packet's facts and verdict come first
        beat = packets.payload
        # Requests reach the table through a register: whether the table takes one
        # depends on its arbitration (host operations and accounting first), and the
        # dispatcher's handshake through it into the inbound control's accounting made
        # the engine's deepest path (docs/performance.md). No request is taken while a
        # replay window loads, as before: the register holds it.
        m.submodules.requests = requests = StreamRegister(table.request.payload.shape())
        m.d.comb += [table.request.payload.eq(requests.o.payload),
                     table.request.valid.eq(requests.o.valid & ~loading),
                     requests.o.ready.eq(table.request.ready & ~loading)]
        to_table = requests.i
        request = to_table.payload
        looked_up = Signal.like(request)     # the last request, kept for RETRY
        # Replies land in a register of the dispatcher's own, with the request and
        # whether an inbound packet was in flight when the table read the SA: the table
        # must never wait with a reply (the accounting that frees the data paths needs
        # it), and a job and decision from a register, not from the table's read port
        # and decision logic, is what the encapsulator and decapsulator take.
        m.submodules.replies = replies = StreamRegister(data.StructLayout({
            "reply": table.reply.payload.shape(), "request": request.shape(), "busy": 1}))
        m.d.comb += [
            replies.i.payload.reply.eq(table.reply.payload),
            replies.i.payload.request.eq(looked_up),
            replies.i.payload.busy.eq(inbound.busy),
            replies.i.valid.eq(table.reply.valid),
            table.reply.ready.eq(replies.i.ready),
        ]
        held = replies.o.payload
        reply = held.reply
        length = held.request.bytes          # the cleartext length, from the first beat
        # Bytes of the IP length not yet handed to the encapsulator: a register counted
        # down (not the length minus a count of bytes sent: that subtraction led the
        # beat's masking and the encapsulator's splitter into one long path). What the
        # encapsulator gets next is up to a beat of it (a beat that reaches it is cut
        # there; every other beat is full).
        left = Signal(17)
        to_encap = Mux(left < BLOCK_BYTES, left, BLOCK_BYTES)
        ends_here = left <= BLOCK_BYTES
        # Two bits per packet through the encapsulator, in order (it holds at most five:
        # one being split, three descriptors queued, one leaving its output buffers):
        # fill in its IPv6 UDP checksum (from the job), abort it at its end (from its
        # last input beat).
        m.submodules.aborts = aborts = SyncFIFO(width=1, depth=8)
        m.submodules.fills = fills = SyncFIFO(width=1, depth=8)
        m.submodules.udp6 = udp6 = Udp6ChecksumFill()
        abort_bit = Signal()
        ended = encap.o.valid & encap.o.ready & encap.o.payload.last
        m.d.comb += [
            aborts.w_data.eq(abort_bit),
            aborts.w_en.eq(encap.i.valid & encap.i.ready & encap.i.payload.last),
            aborts.r_en.eq(ended),
            fills.r_en.eq(ended),
            udp6.i.payload.data.eq(encap.o.payload.data),
            udp6.i.payload.count.eq(encap.o.payload.count),
            udp6.i.payload.first.eq(encap.o.payload.first),
            udp6.i.payload.last.eq(encap.o.payload.last),
            udp6.i.payload.fill.eq(fills.r_data),
            udp6.i.payload.flag.eq(aborts.r_data),
            udp6.i.valid.eq(encap.o.valid),
            encap.o.ready.eq(udp6.i.ready),
        ]
        wiring.connect(m, beats_as(m, udp6.o, packet_beat(BLOCK_BYTES)), merger.i[0])
        # The merged beats leave through a skid buffer, with the two bits that go with
        # them: the egress's choice among engines and the bypass ran back through this
        # merger into the UDP6 fill's FIFOs in one path.
        m.submodules.leaving = leaving = SkidBuffer(_LEAVING)
        wiring.connect(m, beats_as(m, merger.o, _LEAVING, inbound=merger.source == 1,
                                   abort=merger.o.payload.last & (merger.source == 0)
                                   & udp6.o.payload.flag), leaving.i)
        wiring.connect(m, beats_as(m, leaving.o, packet_beat(BLOCK_BYTES)),
                       wiring.flipped(self.o))
        m.d.comb += [
            self.o_inbound.eq(leaving.o.payload.inbound),
            self.o_abort.eq(leaving.o.valid & leaving.o.payload.abort),
        ]
        # The decapsulator takes its job and beats from registers: whether it can take a
        # beat is a function of its whole input side (the core's credits, its banks),
        # which ran into the dispatcher's state and the table's reply register in one
        # path, the engine's deepest (docs/performance.md).
        m.submodules.decap_jobs = decap_jobs = StreamRegister(decap.job.payload.shape())
        m.submodules.decap_beats = decap_beats = SkidBuffer(packet_beat(BLOCK_BYTES))
        wiring.connect(m, decap_jobs.o, decap.job)
        wiring.connect(m, decap_beats.o, decap.i)
        job_in = decap_jobs.i.payload
        start = inbound.start.payload
        m.d.comb += [
            encap.job.payload.eq(reply.job),
            job_in.key.eq(reply.job.key),
            job_in.key_256.eq(reply.job.key_256),
            job_in.salt.eq(reply.job.salt),
            job_in.esn.eq(reply.job.esn),
            job_in.encap.eq(reply.job.natt.encap),
            job_in.transport.eq(reply.job.mode == Mode.TRANSPORT),
            start.slot.eq(held.request.slot),
            start.spi.eq(reply.job.spi),
            start.esn.eq(reply.job.esn),
            start.window.eq(reply.window),
            start.expired.eq(reply.reason == Reason.HARD_EXPIRED),
        ]

        # Outbound packets between their job and their last output beat (an inbound
        # one is `inbound.busy` until accounted, which is after its last output beat).
        outbound = Signal(range(16))
        job_out = encap.job.valid & encap.job.ready
        left_out = self.o.valid & self.o.ready & self.o.payload.last & ~self.o_inbound
        m.d.sync += outbound.eq(outbound + job_out - left_out)

        # Two state machines: `lookup` asks the table about the next packet (from its
        # facts, verdict and slot) while `packet` sends the current one on, so the table's
        # latency is hidden behind a packet's beats. One lookup at a time: the next is
        # asked once the reply before it has left the register.
        deciding = Signal()      # `packet` is between packets
        retry = Signal()         # `packet` sends the held reply's packet back to be asked again
        fence = Signal.like(self.meta.payload.slot)
        verdict = checked.verdict
        first = _FACTS(firsts.r_data)
        with m.FSM(name="lookup"):
            with m.State("ASK"):
                marker = self.meta.payload.fence
                # (A slot on hold is held at the ports' hold gates, `EspNic`, not here:
                # waiting in this engine's queue would hold the whole queue.)
                take = (self.meta.valid & ~marker & firsts.r_rdy & verdict.valid
                        & ~replies.o.valid & ~loading)
                taken = take & to_table.ready
                # A fence's marker waits until every packet before it is past `packet`.
                quiet = deciding & ~replies.o.valid
                m.d.comb += [
                    request.slot.eq(self.meta.payload.slot),
                    *(request[name].eq(first[name]) for name, _field in _FACTS
                      if name != "malformed"),
                    # A wrong IPv4 header checksum makes it malformed too.
                    request.malformed.eq(first.malformed | verdict.payload),
                    to_table.valid.eq(take),
                    self.meta.ready.eq(Mux(marker, quiet, taken)),
                    firsts.r_en.eq(taken),
                    verdict.ready.eq(taken),
                ]
                with m.If(self.meta.valid & marker & quiet):
                    m.d.sync += fence.eq(self.meta.payload.slot)
                    m.next = "FENCE"
                with m.If(taken):
                    m.d.sync += looked_up.eq(request)
                    m.next = "WAIT"
                with m.If(retry):
                    m.next = "RETRY"

            with m.State("WAIT"):
                with m.If(table.reply.valid):    # into `replies`, empty since the ask
                    m.next = "ASK"

            with m.State("RETRY"):
                # An inbound packet whose verdict could depend on packets in flight:
                # look it up again once they have been accounted.
                go = ~loading & ~inbound.busy
                m.d.comb += [request.eq(looked_up), to_table.valid.eq(go)]
                with m.If(go & to_table.ready):
                    m.next = "WAIT"

            with m.State("FENCE"):
                # Every packet that came before the fence has left or been dropped
                # and been accounted; then the fence has passed.
                # (An inbound packet is accounted once its last beat is past the
                # decapsulator: it may still be in `leaving`.)
                drained = (outbound == 0) & ~inbound.busy & ~leaving.o.valid
                passed = self._mover.passed
                m.d.comb += [passed.payload.slot.eq(fence), passed.valid.eq(drained)]
                with m.If(drained & passed.ready):
                    m.next = "ASK"

        with m.FSM(name="packet"):
            with m.State("DECIDE"):
                m.d.comb += deciding.eq(1)
                with m.If(replies.o.valid):
                    with m.Switch(reply.action):
                        with m.Case(Action.PROTECT):
                            # The encapsulator takes a job together with a look at the
                            # packet's first beat.
                            wiring.connect(m, packets, encap.i)
                            outer_v6 = Mux(reply.job.mode == Mode.TUNNEL,
                                           reply.job.tunnel.ip_version == IpVersion.IPV6,
                                           held.request.ipv6)
                            m.d.comb += [encap.job.valid.eq(1),
                                         replies.o.ready.eq(encap.job.ready),
                                         fills.w_data.eq((reply.job.natt.encap == Encap.UDP)
                                                         & outer_v6),
                                         fills.w_en.eq(encap.job.ready)]
                            with m.If(encap.job.ready):
                                m.d.sync += left.eq(length)
                                m.next = "ENCAP"
                        with m.Case(Action.INBOUND):
                            self._decide_inbound(m, held, decap_jobs.i, decap_beats.i, inbound,
                                                 replies, retry, packets)
                        with m.Default():
                            m.d.comb += replies.o.ready.eq(1)
                            with m.If(reply.reason == Reason.UNSUPPORTED):
                                m.d.sync += self.unsupported.eq(self.unsupported + 1)
                            m.next = "DISCARD"

            with m.State("ENCAP"):
                # The encapsulator gets exactly the IP length: bytes past it are
                # discarded (the model ignores them too), a stream that ends short is
                # padded with zero bytes and the ESP packet aborted (see `o_abort`).
                reaches = beat.count >= left
                m.d.comb += [
                    encap.i.payload.data.eq(beat.data & Cat(Mux(to_encap > k, 0xff, 0)
                                                            for k in range(BLOCK_BYTES))),
                    encap.i.payload.count.eq(to_encap),
                    encap.i.payload.first.eq(beat.first),
                    encap.i.payload.last.eq(ends_here),
                    encap.i.valid.eq(packets.valid),
                    packets.ready.eq(encap.i.ready),
                ]
                with m.If(packets.valid & packets.ready):
                    m.d.sync += left.eq(left - BLOCK_BYTES)
                    with m.If(reaches):
                        m.next = "DECIDE"
                        with m.If(~beat.last):
                            m.next = "DISCARD"
                    with m.Elif(beat.last):
                        m.d.sync += self.truncated.eq(self.truncated + 1)
                        with m.If(ends_here):
                            m.next = "DECIDE"
                        with m.Else():
                            m.next = "PAD"
                m.d.comb += abort_bit.eq(~reaches & beat.last)
            with m.State("PAD"):
                m.d.comb += [
                    encap.i.payload.count.eq(to_encap),
                    encap.i.payload.last.eq(ends_here),
                    encap.i.valid.eq(1),
                    abort_bit.eq(1),
                ]
                with m.If(encap.i.ready):
                    m.d.sync += left.eq(left - BLOCK_BYTES)
                    with m.If(ends_here):
                        m.next = "DECIDE"
            with m.State("DECAP"):
                wiring.connect(m, packets, decap_beats.i)
                with m.If(packets.valid & packets.ready & beat.last):
                    m.next = "DECIDE"
            with m.State("DISCARD"):
                m.d.comb += packets.ready.eq(1)
                with m.If(packets.valid & beat.last):
                    m.next = "DECIDE"

    def _decide_inbound(self, m, held, decap_job, decap_beat, inbound, replies, retry, packets):
        """An inbound packet goes to the decapsulator and the inbound control together,
        behind the packets in flight if its verdict cannot depend on them: its SA is
        far from its hard lifetime (``headroom``) and without ESN (its high half comes
        from a check that must see every earlier commit), or none was in flight when
        the table read the SA (``busy``: packets started since then are none, and the
        reply counts every packet accounted before). Otherwise it is looked up again
        once they have been accounted. An expired SA stays expired: its packet goes at
        once, to be discarded. The reply waits in the dispatcher's register for room in
        the decapsulator's registers and the control; the table goes on meanwhile.
        The job, the control's start and the first beat go in the same cycle."""
        reply = held.reply
        expired = reply.reason == Reason.HARD_EXPIRED
        allowed = expired | ~held.busy | (reply.headroom & ~reply.job.esn)
        with m.If(~allowed):
            m.d.comb += [replies.o.ready.eq(1), retry.eq(1)]
        with m.Elif(expired):
            m.d.comb += [inbound.start.valid.eq(1), replies.o.ready.eq(inbound.start.ready)]
            with m.If(inbound.start.ready):
                m.next = "DISCARD"
        with m.Else():
            # Each of the three is offered once the other two can take it too.
            room = {"job": decap_job.ready, "start": inbound.start.ready,
                    "beat": decap_beat.ready}

            def others(name):
                return packets.valid & Cat(ready for key, ready in room.items()
                                           if key != name).all()

            go = others("job") & decap_job.ready
            m.d.comb += [
                decap_job.valid.eq(others("job")),
                inbound.start.valid.eq(others("start")),
                decap_beat.valid.eq(others("beat")),
                decap_beat.payload.eq(packets.payload),
                packets.ready.eq(go),
                replies.o.ready.eq(go),
            ]
            with m.If(go):
                with m.If(packets.payload.last):
                    m.next = "DECIDE"        # a one-beat packet
                with m.Else():
                    m.next = "DECAP"
