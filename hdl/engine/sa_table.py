# SPDX-License-Identifier: BSD-2-Clause
"""The SA table of one engine: records, counters, sequence numbers, lifetimes.

Per slot it keeps the SA record (every field of :func:`sa_layout` but the
replay bitmap, which the replay unit keeps) and the :data:`SA_COUNTERS`
record, in block RAM. It answers three kinds of requests, one at a time:

* **host** (:data:`HOST_OP`): write a record (counters cleared), read it back
  with the key and salt as zero (they are write-only), delete a slot (record
  and counters zeroized), read the counters; and the two halves of live SA
  migration (moving an SA with its whole state to a slot of another engine),
  engine-internal: they are for the engine-to-engine fabric, so the key never
  leaves the chip, and the engine refuses them from the host link.
  ``EXPORT`` replies with the record as stored (key and salt included) and the
  counters and, in the cycle the reply is taken, zeroizes the slot as
  ``DELETE`` does, so that an SA's (key, sequence number) state is never live
  in two places (an empty slot replies with the empty record and stays
  empty). ``IMPORT`` writes the record *and* the counters given (``counters``,
  which no other op uses), event flags included: a lifetime the SA crossed
  before it moved does not raise its event again, since events are raised
  when accounting crosses a limit whose flag is clear (counters are meant to
  come from ``EXPORT``, whose flags say which events were raised). The
  replay bitmap moves through the replay unit. Accounting that arrives for a
  slot after its ``EXPORT`` (or ``DELETE``) lands on the zeroized slot, so an
  SA is exported once its packets in flight are accounted. Other values of
  ``op`` do nothing and get no reply;
* **outbound** (:data:`OUT_REQUEST`: a slot, and from the packet's first beat
  its cleartext length, whether it is IPv6, starts with IPv6 extension headers
  (:data:`IPV6_EXT_WALKED`), is a fragment, or has an IP header the model calls
  malformed): the checks of ``EspModel.process`` before encapsulation, in the
  model's order -- empty slot (``no_sa``, an engine counter), hard lifetime
  reached or SA draining (``hard_expired``), a malformed IP header
  (``malformed``), sequence number exhausted
  (``seq_overflow``, which also raises the ``hard_expired`` event), a fragment on
  a transport-mode SA (``malformed``: transport mode needs the whole
  datagram) -- then the
  next sequence number is allocated and written back, so it is never handed
  out twice, the packet is accounted (below) and the :data:`ENCAP_JOB` goes
  out. Accounting at allocation, not when the ESP packet has left, keeps the
  lifetime checks exact with packets in flight: an outbound packet that got a
  sequence number is always sent;
* **account** (:data:`ACCOUNT`: a slot, a :class:`Tally` and a length): the
  outcome of an inbound packet of the SA, once the engine knows it. ``PACKET``
  (the ICV verified, the inner packet released): packets and bytes are added
  (saturating), and crossing a soft or hard lifetime raises its event once
  (``events``); ``AUTH_FAIL``, ``REPLAY``, ``MALFORMED``, ``EXPIRED``: that drop
  counter goes up. With ``advance``, ``seq`` is an authenticated sequence number
  and the record's ``seq`` becomes the larger of the two, so that a host read of
  an inbound SA shows the window's top (the replay unit keeps the bitmap).

Packets the data path cannot handle yet are refused with ``UNSUPPORTED``
before anything is allocated or counted (the engine counts them): outbound
UDP encapsulation with an IPv6 outer header (the tunnel's, or the packet's own
in transport mode) of a cleartext packet longer than ``udp6_limit`` (its
checksum covers the whole ciphertext, so the engine holds the ESP packet whole:
:func:`udp6_fill_limit`), and IPv6 extension headers in front of where ESP goes
or is (an outbound transport-mode packet's, any inbound packet's outer header).

An outbound request for an inbound SA has no side effect: it answers
``INBOUND`` with the job (key, salt, SPI, ESN, encapsulation) and the window
size, and reason ``HARD_EXPIRED`` when the hard lifetime has been reached (the
engine then drops the packet and accounts it as ``EXPIRED``); ``headroom`` says
whether the lifetime is far enough from its hard limit for the answer to hold
with up to :data:`INBOUND_OVERLAP` earlier packets still to be accounted. Each request takes
4 cycles (take, read, decide, write: the slot of the request taken is registered
before it addresses the memories), an account request 5 (the counters' sums are
registered before the lifetime compares), an outbound one 5 (the decision is
registered before it is offered); host requests have priority, then accounting,
then outbound requests. A host operation stays on ``host`` until its slot has
been read (taken in the cycle its write is made or, with a reply, the cycle
before the reply is offered): the table reads it there, in the register in
front of it, rather than keeping a copy.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .encap import ENCAP_JOB
from .udp6 import udp6_fill_limit
from .sa import REPLAY_WINDOW, SA_COUNTERS, Direction, Encap, IpVersion, Mode, SaState, sa_layout

__all__ = ["SaTable", "INBOUND_OVERLAP", "Action", "Reason", "HostOp", "Event", "Tally", "control_layout",
           "control_record",
           "HOST_OP", "HOST_REPLY", "OUT_REQUEST", "OUT_REPLY", "ACCOUNT", "EVENT"]


def control_layout(window: int = REPLAY_WINDOW) -> data.StructLayout:
    """The SA record as this table keeps it: everything but the replay bitmap."""
    return data.StructLayout({name: field.shape for name, field in sa_layout(window)
                              if name != "replay_bitmap"})


def control_record(record: data.Const) -> dict:
    """The fields of a full :func:`sa_layout` record that the table keeps (what the host
    writes, as a ``{field: value}`` dict for ``control_layout(...).const``)."""
    window = record.shape()["replay_bitmap"].width
    return {name: getattr(record, name) for name, _field in control_layout(window)}


class Action(enum.Enum, shape=2):
    PROTECT = 0   # encapsulate with the job
    DROP    = 1   # `reason` says why
    INBOUND = 2   # the slot holds an inbound SA


class Reason(enum.Enum, shape=3):
    """Why a packet is dropped; but for ``UNSUPPORTED`` the names are the model's reasons."""
    NONE         = 0
    NO_SA        = 1
    HARD_EXPIRED = 2
    SEQ_OVERFLOW = 3
    MALFORMED    = 4   # a bad IP header, or a fragment on a transport-mode SA
    UNSUPPORTED  = 5   # a feature the data path does not have (see SaTable)


class HostOp(enum.Enum, shape=3):
    WRITE         = 0   # record; counters cleared
    READ          = 1   # reply: record with key and salt as zero, counters
    DELETE        = 2   # record and counters zeroized
    READ_COUNTERS = 3   # reply: as READ
    # Live migration, engine-internal (the engine refuses them from the host link):
    EXPORT        = 4   # reply: record with key and salt, counters; then as DELETE
    IMPORT        = 5   # record and `counters` as given


class Tally(enum.Enum, shape=3):
    """What an ``account`` request adds to the slot's counters."""
    NONE      = 0   # nothing (a dummy packet: only ``advance``)
    PACKET    = 1   # packets, bytes, lifetime events
    AUTH_FAIL = 2
    REPLAY    = 3
    MALFORMED = 4
    EXPIRED   = 5


class Event(enum.Enum, shape=1):
    SOFT_EXPIRED = 0
    HARD_EXPIRED = 1


def _ops(slots, window):
    slot = range(slots)
    control = control_layout(window)
    return {
        "HOST_OP": data.StructLayout({"op": HostOp, "slot": slot, "record": control,
                                      "counters": SA_COUNTERS}),   # IMPORT's
        "HOST_REPLY": data.StructLayout({"record": control, "counters": SA_COUNTERS}),
        "OUT_REQUEST": data.StructLayout({"slot": slot, "bytes": 16, "ipv6": 1, "v6_ext": 1,
                                          "fragment": 1, "malformed": 1}),
        "OUT_REPLY": data.StructLayout({"action": Action, "reason": Reason, "job": ENCAP_JOB,
                                        "window": 16, "headroom": 1}),
        "ACCOUNT": data.StructLayout({"slot": slot, "tally": Tally, "bytes": 16,
                                      "advance": 1, "seq": 64}),
        "EVENT": data.StructLayout({"slot": slot, "event": Event}),
    }


#: The request and reply layouts for the default table (16 slots, 1024-packet window);
#: :meth:`SaTable.layouts` gives them for other sizes.
_DEFAULT = _ops(16, REPLAY_WINDOW)
HOST_OP, HOST_REPLY = _DEFAULT["HOST_OP"], _DEFAULT["HOST_REPLY"]
OUT_REQUEST, OUT_REPLY = _DEFAULT["OUT_REQUEST"], _DEFAULT["OUT_REPLY"]
ACCOUNT, EVENT = _DEFAULT["ACCOUNT"], _DEFAULT["EVENT"]


#: Inbound packets an engine may have in flight (looked up, not yet accounted) while it
#: looks up one more of the same SA: ``headroom`` in the reply says that even with
#: this many more packets of up to 64 KiB accounted the hard lifetime stays unreached,
#: so the lookup's verdict is the one it would give after them.
INBOUND_OVERLAP = 5     # the inbound packets a fast engine holds: 4 banks + 1 (engine.py)


def _saturating_add(value, increment):
    total = value + increment
    return Mux(total[len(value)], (1 << len(value)) - 1, total[:len(value)])


def _reached(count, limit):
    """A lifetime limit is reached once the count is at it (0: no limit)."""
    return (limit != 0) & (count >= limit)


class SaTable(wiring.Component):
    """SA records and counters of one engine (see the module docstring).

    Parameters
    ----------
    slots : SA slots, a power of two from 2 to 4096 (at least 16 on iCE40, 256 on ECP5).
    window : the largest replay window the engine supports (sets the record layout).
    """

    def __init__(self, *, slots: int = 16, window: int = REPLAY_WINDOW,
                 udp6_limit: int = udp6_fill_limit()):
        if type(slots) is not int or not 2 <= slots <= 4096 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two from 2 to 4096, not {slots!r}")
        if type(udp6_limit) is not int or not 0 <= udp6_limit < 2**16:
            raise ValueError(f"udp6_limit must be a byte count below 65536, not {udp6_limit!r}")
        self._slots, self._window, self._udp6_limit = slots, window, udp6_limit
        self._control = control_layout(window)
        ops = self.layouts(slots, window)
        super().__init__({
            "host":       In(stream.Signature(ops["HOST_OP"])),
            "host_reply": Out(stream.Signature(ops["HOST_REPLY"])),
            "request":    In(stream.Signature(ops["OUT_REQUEST"])),
            "reply":      Out(stream.Signature(ops["OUT_REPLY"])),
            "account":    In(stream.Signature(ops["ACCOUNT"])),
            "events":     Out(stream.Signature(ops["EVENT"])),
            "no_sa":      Out(32),    # outbound packets for an empty slot
        })

    @staticmethod
    def layouts(slots: int, window: int = REPLAY_WINDOW) -> dict:
        """The request and reply layouts of a table of this size."""
        return _ops(slots, window)

    def elaborate(self, platform):
        m = Module()
        control = self._control
        m.submodules.records = records = Memory(shape=control, depth=self._slots, init=[])
        m.submodules.counters = counters = Memory(shape=SA_COUNTERS, depth=self._slots, init=[])
        rec_read, cnt_read = records.read_port(), counters.read_port()
        rec_write, cnt_write = records.write_port(), counters.write_port()

        slot = Signal(range(self._slots))
        # A host operation is read where it waits (the stream holds it until taken) and
        # taken only once its slot has been read: a copy would be another 1,252-bit
        # register with an enable reaching every bit, what the router found hardest.
        host_op = self.host.payload
        exporting = Signal()
        length = Signal(16)      # of the packet being accounted
        request = Signal.like(self.request.payload)   # the outbound request being decided
        tally = Signal.like(self.account.payload)
        m.d.comb += [rec_read.addr.eq(slot), cnt_read.addr.eq(slot),
                     rec_write.addr.eq(slot), cnt_write.addr.eq(slot)]
        rec = control(rec_read.data)
        cnt = SA_COUNTERS(cnt_read.data)

        # Outbound decision, from the record and counters just read.
        life = rec.lifetime
        hard_reached = (_reached(cnt.packets, life.packets_hard)
                        | _reached(cnt.bytes, life.bytes_hard))
        seq_max = Mux(rec.esn, C(2**64 - 1, 64), C(2**32 - 1, 64))
        next_seq = rec.seq + 1
        job = self.reply.payload.job
        headroom = (~_reached(cnt.packets + INBOUND_OVERLAP, life.packets_hard)
                    & ~_reached(cnt.bytes + INBOUND_OVERLAP * (2**16 - 1), life.bytes_hard))
        decision = Signal(data.StructLayout({"action": Action, "reason": Reason, "headroom": 1}))
        m.d.comb += [
            job.mode.eq(rec.mode), job.key.eq(rec.key), job.key_256.eq(rec.key_256),
            job.salt.eq(rec.salt), job.spi.eq(rec.spi), job.seq.eq(next_seq),
            job.esn.eq(rec.esn), job.tunnel.eq(rec.tunnel), job.natt.eq(rec.natt),
            self.reply.payload.window.eq(rec.window),
        ]
        new_cnt = Signal(SA_COUNTERS)
        m.d.comb += [new_cnt.eq(cnt), cnt_write.data.eq(new_cnt), rec_write.data.eq(rec)]
        reply = self.reply.payload

        # Accounting, from the counters read a cycle before: the 64-bit sums go into
        # registers first, since the sums, the lifetime compares on them and the
        # write-back were one path (the engine's deepest, docs/performance.md).
        packets = Signal.like(cnt.packets)
        octets = Signal.like(cnt.bytes)
        m.d.sync += [packets.eq(_saturating_add(cnt.packets, 1)),
                     octets.eq(_saturating_add(cnt.bytes, length))]
        soft_now = (_reached(packets, life.packets_soft) | _reached(octets, life.bytes_soft))
        hard_now = (_reached(packets, life.packets_hard) | _reached(octets, life.bytes_hard))
        raise_soft = Signal()
        raise_hard = Signal()

        def account_packet():
            """Add the packet to the counters; crossing a lifetime raises its event once."""
            m.d.comb += [new_cnt.packets.eq(packets), new_cnt.bytes.eq(octets)]
            with m.If(soft_now & ~cnt.soft_expired):
                m.d.comb += new_cnt.soft_expired.eq(1)
                m.d.sync += raise_soft.eq(1)
            with m.If(hard_now & ~cnt.hard_expired):
                m.d.comb += new_cnt.hard_expired.eq(1)
                m.d.sync += raise_hard.eq(1)

        # A request is taken in IDLE and its slot registered; the read ports get it in
        # the READ_* state, so the record and counters are there in the state after.
        # (Taking the slot straight from the winning request ran the three requests'
        # arbitration into the ports' address: the engine's deepest path,
        # docs/performance.md.)
        with m.FSM(name="table"):
            with m.State("IDLE"):
                with m.If(self.host.valid):
                    m.d.sync += slot.eq(host_op.slot)
                    m.next = "READ_HOST"
                with m.Elif(self.account.valid):
                    m.d.comb += self.account.ready.eq(1)
                    m.d.sync += [slot.eq(self.account.payload.slot),
                                 length.eq(self.account.payload.bytes),
                                 tally.eq(self.account.payload)]
                    m.next = "READ_ACCOUNT"
                with m.Elif(self.request.valid):
                    m.d.comb += self.request.ready.eq(1)
                    m.d.sync += [slot.eq(self.request.payload.slot),
                                 length.eq(self.request.payload.bytes),
                                 request.eq(self.request.payload)]
                    m.next = "READ_OUTBOUND"

            for kind in ("HOST", "ACCOUNT", "OUTBOUND"):
                with m.State(f"READ_{kind}"):
                    m.next = kind

            with m.State("HOST"):
                # The read port has the slot's record and counters now.
                # The operation is taken now; a reply needs only the read ports and
                # whether it is an export's.
                m.d.comb += self.host.ready.eq(1)
                m.d.sync += exporting.eq(host_op.op == HostOp.EXPORT)
                with m.Switch(host_op.op):
                    with m.Case(HostOp.WRITE):
                        m.d.comb += [rec_write.data.eq(host_op.record), new_cnt.eq(0),
                                     rec_write.en.eq(1), cnt_write.en.eq(1)]
                        m.next = "IDLE"
                    with m.Case(HostOp.IMPORT):
                        m.d.comb += [rec_write.data.eq(host_op.record), new_cnt.eq(host_op.counters),
                                     rec_write.en.eq(1), cnt_write.en.eq(1)]
                        m.next = "IDLE"
                    with m.Case(HostOp.DELETE):
                        m.d.comb += [rec_write.data.eq(0), new_cnt.eq(0),
                                     rec_write.en.eq(1), cnt_write.en.eq(1)]
                        m.next = "IDLE"
                    with m.Case(HostOp.READ, HostOp.READ_COUNTERS, HostOp.EXPORT):
                        m.next = "HOST_REPLY"
                    with m.Default():
                        m.next = "IDLE"
            with m.State("HOST_REPLY"):
                out = self.host_reply.payload
                m.d.comb += [
                    out.record.eq(rec),
                    out.counters.eq(cnt),
                    self.host_reply.valid.eq(1),
                ]
                with m.If(~exporting):
                    # Write-only over the host link.
                    m.d.comb += [out.record.key.eq(0), out.record.salt.eq(0)]
                with m.If(self.host_reply.ready):
                    # Zeroized as the reply is taken, not before: the read port
                    # keeps showing the slot while the reply waits.
                    with m.If(exporting):
                        m.d.comb += [rec_write.data.eq(0), new_cnt.eq(0),
                                     rec_write.en.eq(1), cnt_write.en.eq(1)]
                    m.next = "IDLE"

            with m.State("ACCOUNT"):
                # The read port has the counters now; their sums are in a cycle later.
                m.next = "TALLY"
            with m.State("TALLY"):
                with m.Switch(tally.tally):
                    with m.Case(Tally.PACKET):
                        account_packet()
                    for kind, name in ((Tally.AUTH_FAIL, "auth_fail"),
                                       (Tally.REPLAY, "replay_drop"),
                                       (Tally.MALFORMED, "malformed_drop"),
                                       (Tally.EXPIRED, "expired_drop")):
                        with m.Case(kind):
                            m.d.comb += new_cnt[name].eq(_saturating_add(cnt[name], 1))
                with m.If(tally.advance & (tally.seq > rec.seq)):
                    m.d.comb += [rec_write.data.seq.eq(tally.seq), rec_write.en.eq(1)]
                m.d.comb += cnt_write.en.eq(1)
                m.next = "EVENTS"
            with m.State("EVENTS"):
                # Soft before hard, as the model raises them.
                m.d.comb += [
                    self.events.payload.slot.eq(slot),
                    self.events.payload.event.eq(Mux(raise_soft, Event.SOFT_EXPIRED,
                                                     Event.HARD_EXPIRED)),
                    self.events.valid.eq(raise_soft | raise_hard),
                ]
                with m.If(raise_soft):
                    with m.If(self.events.ready):
                        m.d.sync += raise_soft.eq(0)
                with m.Elif(raise_hard):
                    with m.If(self.events.ready):
                        m.d.sync += raise_hard.eq(0)
                with m.Else():
                    m.next = "IDLE"

            with m.State("OUTBOUND"):
                # The decision, from the record and counters just read, goes into a
                # register: the engine takes the reply through its dispatcher into a
                # data path, and the lifetime compares and this priority chain in front
                # of that made the data plane's deepest paths (docs/performance.md).
                outer_v6 = Mux(rec.mode == Mode.TUNNEL, rec.tunnel.ip_version == IpVersion.IPV6,
                               request.ipv6)
                transport = rec.mode == Mode.TRANSPORT
                unsupported = Mux(rec.direction == Direction.OUT,
                                  ((rec.natt.encap == Encap.UDP) & outer_v6
                                   & (request.bytes > self._udp6_limit)
                                   | transport & request.v6_ext),
                                  request.v6_ext)

                def decide(action, reason=Reason.NONE):
                    m.d.sync += [decision.action.eq(action), decision.reason.eq(reason)]

                m.d.sync += decision.headroom.eq(headroom)
                with m.If(rec.state == SaState.INVALID):
                    decide(Action.DROP, Reason.NO_SA)
                with m.Elif(unsupported):
                    decide(Action.DROP, Reason.UNSUPPORTED)
                with m.Elif(rec.direction == Direction.IN):
                    decide(Action.INBOUND, Mux(hard_reached, Reason.HARD_EXPIRED, Reason.NONE))
                with m.Elif(hard_reached | (rec.state != SaState.VALID)):
                    decide(Action.DROP, Reason.HARD_EXPIRED)
                with m.Elif(request.malformed):
                    decide(Action.DROP, Reason.MALFORMED)
                with m.Elif(rec.seq >= seq_max):
                    decide(Action.DROP, Reason.SEQ_OVERFLOW)
                with m.Elif(transport & request.fragment):
                    decide(Action.DROP, Reason.MALFORMED)
                with m.Else():
                    decide(Action.PROTECT)
                m.next = "REPLY"

            with m.State("REPLY"):
                # The read ports still show the slot's record and counters (`slot` has
                # not changed), so the job and the write-back come from them.
                m.d.comb += [self.reply.valid.eq(1), reply.action.eq(decision.action),
                             reply.reason.eq(decision.reason),
                             reply.headroom.eq(decision.headroom)]
                with m.If(self.reply.ready):
                    with m.If(decision.action == Action.PROTECT):
                        m.d.comb += [rec_write.data.seq.eq(next_seq), rec_write.en.eq(1),
                                     cnt_write.en.eq(1)]
                        account_packet()
                    with m.Elif(decision.action == Action.DROP):
                        with m.Switch(decision.reason):
                            with m.Case(Reason.NO_SA):
                                m.d.sync += self.no_sa.eq(self.no_sa + 1)
                            for reason, name in ((Reason.HARD_EXPIRED, "expired_drop"),
                                                 (Reason.MALFORMED, "malformed_drop"),
                                                 (Reason.SEQ_OVERFLOW, "seq_overflow_drop")):
                                with m.Case(reason):
                                    m.d.comb += [new_cnt[name].eq(_saturating_add(cnt[name], 1)),
                                                 cnt_write.en.eq(1)]
                        # Sequence numbers exhausted: the SA has reached its end of life.
                        with m.If((decision.reason == Reason.SEQ_OVERFLOW) & ~cnt.hard_expired):
                            m.d.comb += new_cnt.hard_expired.eq(1)
                            m.d.sync += raise_hard.eq(1)
                    m.next = "EVENTS"
        return m
