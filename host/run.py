# SPDX-License-Identifier: BSD-2-Clause
"""``espnic run``'s machinery: a device by URL, a packet file through it, a summary.

:func:`open_device` gives a :class:`Device` for a URL, starting what the URL
names: ``sim://`` (the default: the device in Verilator, ``espnic sim``'s server,
started for the run and stopped after it), ``model://`` (the reference model
in-process), or any URL :func:`~espnic.host.transport.open_port` takes.

:func:`push` injects IP packets one at a time and waits after each until the
device is quiet (its counters read the same twice in a row, every packet frame
received, and a fence through every engine passed), so each input's outputs leave
before the next input goes in: the
output file's order is the input's, the same from every device (the device
keeps order only per SA and per port's bypass traffic), at the cost of a round
trip per packet. Each output carries the timestamp of the input it came from.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from ..hdl.bridge.regmap import PacketSource
from ..hdl.engine.sa_table import Event
from .device import Device, LinkError

__all__ = ["open_device", "push", "Pushed", "device_summary"]


@contextlib.contextmanager
def open_device(url: str | None = None, *, engines: int | None = None,
                timeout: float = 10.0, progress=None):
    """A :class:`Device` for ``url`` (None: ``sim://``) for the ``with`` block.

    ``engines``: the engine count of a device this starts (``sim://``, ``model://``);
    a device that exists must have that many. ``progress(text)`` is told what is
    slow (a simulator build)."""
    url = url or "sim://"
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme == "sim":
        from ..sim.device_server import running_server
        from .transport.model import model_parameters

        params = model_parameters("model://" + url[len("sim://"):])
        if engines is not None:
            params["engines"] = engines
        if progress:
            progress("starting the simulated device (Verilator; a first build of these "
                     "parameters takes minutes)")
        with running_server(**params) as served:
            device = Device.open(served, timeout=timeout)
            try:
                yield device
            finally:
                device.close()
        return
    if scheme == "model" and engines is not None:
        from .transport.model import model_parameters
        if "engines" in model_parameters(url):
            raise ValueError("--engines and the device URL's engines= both set the engines; "
                             "give one")
        url += ("&" if "?" in url else "?") + f"engines={engines}"
    device = Device.open(url, timeout=timeout)
    try:
        if engines is not None and device.params["engines"] != engines:
            raise ValueError(f"the device at {url} has {device.params['engines']} engines, "
                             f"not {engines}")
        yield device
    finally:
        device.close()


@dataclass
class Pushed:
    """What came out of :func:`push`: ``outputs`` ``[(timestamp, egress port, packet)]``
    in emission order, ``exceptions`` ``[(timestamp, ingress port, packet)]`` (the
    packets sent to the host's exception queue), ``aborted`` packets the device
    cut off."""
    outputs: list
    exceptions: list
    aborted: int = 0
    events: list = field(default_factory=list)    # other items, as Device.items() gives them


def push(device: Device, packets, *, port: int = 0, settle_timeout: float = 30.0,
         progress=None) -> Pushed:
    """Inject ``packets`` (``[(timestamp, IP packet)]``) into ingress ``port`` one at a
    time (see the module docstring); ``progress(done, total)`` after each."""
    pushed = Pushed([], [])
    total = len(packets)
    for done, (timestamp, packet) in enumerate(packets, start=1):
        device.inject(port, packet)
        _settle(device, pushed, timestamp, port, settle_timeout)
        if progress:
            progress(done, total)
    return pushed


def _settle(device: Device, pushed: Pushed, timestamp: float, port: int, timeout: float):
    """Wait until everything the last packet caused has come out: a fence through
    ``port`` to every engine has passed it (every packet before it has left the
    engines), then until the counters read the same twice with every packet frame
    taken (the bypass and the egress are short, and the reads take longer)."""
    deadline = time.monotonic() + timeout
    engines = range(device.params["engines"])
    for engine in engines:
        device.send("fence_host", port, {"engine": engine, "slot": 0})
    passed = set()
    while len(passed) < len(engines):
        if time.monotonic() > deadline:
            raise LinkError(f"no fence came through the engines within {timeout:g} s")
        for item in device.items(wait=0.05):
            if item[0] == "engine_fenced":
                passed.add(item[1])
            else:
                pushed.events.append(item)
    previous = None
    while True:
        _take_packets(device, pushed, timestamp)
        counters = device.counters()
        _take_packets(device, pushed, timestamp)
        if counters == previous:
            return
        if time.monotonic() > deadline:
            raise LinkError(f"the device did not settle within {timeout:g} s of a packet")
        previous = counters


def _take_packets(device: Device, pushed: Pushed, timestamp: float):
    for source, port, packet, aborted in device.packets():
        if aborted:
            pushed.aborted += 1
        elif source is PacketSource.EXCEPTION:
            pushed.exceptions.append((timestamp, port, packet))
        else:
            pushed.outputs.append((timestamp, port, packet))


def device_summary(device: Device) -> dict:
    """The device's counters by unit: ``{"device": {...}, "ports": [{...}],
    "engines": [{...}], "link": {...}}``, names as in the register map."""
    from ..hdl.bridge.regmap import BRIDGE_COUNTERS
    from ..hdl.top import ENGINE_COUNTERS, PORT_COUNTERS

    counters = device.counters()
    params = device.params
    forwarders = params["ports"] + params["nested"]
    summary = {
        "ports": [{name: counters[f"{name}[{p}]"] for name in PORT_COUNTERS}
                  for p in range(forwarders)],
        "engines": [{name: counters[f"{name}[{k}]"] for name in ENGINE_COUNTERS}
                    for k in range(params["engines"])],
        "link": {name: counters[name] for name in BRIDGE_COUNTERS},
    }
    for p in range(forwarders):
        summary["ports"][p]["sent"] = counters[f"sent[{p}]"]
    summary["device"] = {name: value for name, value in counters.items()
                         if "[" not in name and name not in BRIDGE_COUNTERS and name != "idle"}
    return summary


def default_routes(device: Device, port: int = 0):
    """Route every IPv4 and IPv6 destination to egress ``port`` (routes 0 and 1): what
    a run of one packet file out of one port needs."""
    for index, ipv6 in ((0, False), (1, True)):
        if not device.write_route(index, valid=1, ipv6=int(ipv6), dst=0, length=0, port=port):
            raise LinkError(f"the device refused the default route of route {index}")


def install(controller, config) -> list:
    """Every SA, then every policy of ``config`` (a :class:`~espnic.host.config.Config`)
    through ``controller``; on an error what was installed is removed again (last
    first) before it is raised, so a config goes in whole or not at all."""
    done = []
    try:
        for spec in config.sas:
            controller.add_sa(spec)
            done.append(("sa", spec.config))
        for spec in config.policies:
            done.append(("policy", controller.add_policy(spec)))
    except BaseException:
        for kind, what in reversed(done):
            with contextlib.suppress(Exception):
                if kind == "policy":
                    controller.delete_policy(what)
                else:
                    controller.delete_sa(what.spi, dst=what.dst, direction=what.direction)
        raise
    return done


def sa_summary(controller) -> list[dict]:
    """Each SA the controller knows: where it is and its counters, from its engine."""
    from ..hdl.engine.sa import SA_COUNTERS

    rows = []
    for info in controller.sas():
        state = controller.sa_state(info.spi, dst=info.dst, direction=info.direction)
        rows.append({"spi": info.spi, "direction": info.direction, "dst": info.dst,
                     "device": info.placement.device, "engine": info.placement.engine,
                     "slot": info.placement.slot,
                     **{name: int(getattr(state.counters, name)) for name, _ in SA_COUNTERS}})
    return rows


def run(config_path, in_path, out_path, *, device_url: str | None = None,
        engines: int | None = None, port: int = 0, progress=None) -> dict:
    """``espnic run``: the config into the device, the packet file through it, every
    packet it sends out into ``out_path``; returns the summary (see
    ``docs/user-guide.md``). Inputs are all checked before the device is touched."""
    from .config import load_config
    from .controller import Controller
    from .pcapio import LINKTYPE_ETHERNET, ethernet_frame, ip_packet, read_capture, \
        write_capture

    config = load_config(config_path)
    capture = read_capture(in_path)
    packets = [(timestamp, ip) for timestamp, frame in capture.packets
               if (ip := ip_packet(frame, capture.linktype))]
    write_capture(out_path, capture.linktype, [])        # writable, before any work
    with open_device(device_url, engines=engines,
                     progress=(lambda text: progress("status", text)) if progress else None) \
            as device:
        if not 0 <= port < device.params["ports"]:
            raise ValueError(f"--port {port}: the device has ports 0..{device.params['ports'] - 1}")
        config.check_engines(device.params["engines"])
        controller = Controller([device])
        try:
            install(controller, config)
            default_routes(device, port)
            pushed = push(device, packets, port=port,
                          progress=(lambda done, total: progress("packets", done, total))
                          if progress else None)
            summary = device_summary(device)
            summary["sas"] = sa_summary(controller)
        finally:
            controller.close()
        summary["params"] = {name: value for name, value in device.params.items()
                             if name != "ethernet"}
    wrap = ethernet_frame if capture.linktype == LINKTYPE_ETHERNET else (lambda ip, _port: ip)
    write_capture(out_path, capture.linktype,
                  [(timestamp, wrap(packet, egress)) for timestamp, egress, packet in pushed.outputs])
    summary["packets"] = {"in": len(capture.packets), "not_ip": len(capture.packets) - len(packets),
                          "out": len(pushed.outputs), "to_host": len(pushed.exceptions),
                          "aborted": pushed.aborted}
    summary["events"] = [_event(name, index, item) for name, index, item in pushed.events]
    return summary


def summary_text(summary: dict) -> str:
    """The summary as the tables ``espnic run`` prints."""
    from ..bench.report import table
    from ..hdl.engine.sa import SA_COUNTERS

    p = summary["params"]
    n = summary["packets"]
    lines = [f"{n['in']} packets in ({n['not_ip']} not IP, skipped), {n['out']} out, "
             f"{n['to_host']} to the host, {n['aborted']} aborted; device: {p['engines']} "
             f"engine(s), {p['ports']} port(s), {p['profile']}", ""]
    engines = [{"engine": k, "sas": sum(sa["engine"] == k for sa in summary["sas"]), **counts}
               for k, counts in enumerate(summary["engines"])]
    lines += [table(engines, list(engines[0])), ""]
    if summary["sas"]:
        sas = [{"spi": f"{sa['spi']:#x}", "dir": sa["direction"], "engine": sa["engine"],
                "slot": sa["slot"], **{name: sa[name] for name, field in SA_COUNTERS
                                       if field.width > 1}}
               for sa in summary["sas"]]
        lines += [table(sas, list(sas[0])), ""]
    ports = [{"port": k, **counts} for k, counts in enumerate(summary["ports"])]
    lines.append(table(ports, list(ports[0])))
    return "\n".join(lines)


def _event(channel: str, index: int, item) -> dict:
    """An item the device sent during the run, for the summary."""
    event = {"channel": channel, "engine": index, "slot": int(item.slot)}
    if channel == "engine_events":
        event["event"] = Event(item.event).name.lower()
    return event
