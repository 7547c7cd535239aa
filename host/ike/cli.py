# SPDX-License-Identifier: BSD-2-Clause
"""``espnic ike --config C.toml [--device URL] [--db PATH] [--tun NAME]``: the IKEv2
daemon (:class:`~.daemon.IkeDaemon`) over the security controller of the device(s),
until Ctrl-C or SIGTERM; then every IKE SA is deleted (the peers are told) and its
CHILD_SAs leave the device.

:func:`add_parser` defines the command on the ``espnic`` parser; :data:`COMMANDS`
maps its name to the function that runs it (exit status as its result)."""

from __future__ import annotations

import logging
import signal
import sys

__all__ = ["add_parser", "COMMANDS"]


def add_parser(commands):
    from ..commands import DEFAULT_DB, DEFAULT_DEVICE
    ike = commands.add_parser(
        "ike", help="run the IKEv2 daemon: negotiate CHILD_SAs into the device",
        description="Negotiate IKE SAs and CHILD_SAs (ESP AES-GCM-16, pre-shared keys) with "
                    "the peers of a config and install them into the device through the "
                    "security controller, with an outbound policy from the traffic "
                    "selectors; rekey, delete and check liveness until Ctrl-C or SIGTERM, "
                    "which deletes the IKE SAs and their CHILD_SAs. See the user guide, "
                    "section IKEv2.")
    ike.add_argument("--config", required=True, metavar="C.toml",
                     help="the [ike] table and the [[peer]] tables")
    ike.add_argument("--device", metavar="URL", action="append", default=None,
                     help=f"the device (default $ESPNIC_DEVICE or {DEFAULT_DEVICE}); repeat "
                          f"it for one controller over several devices")
    ike.add_argument("--db", metavar="PATH",
                     help=f"the SA database (default $ESPNIC_DB or {DEFAULT_DB})")
    ike.add_argument("--tun", metavar="NAME",
                     help="carry traffic too: ESP-in-UDP arriving at the NAT-T port into the "
                          "device, and packets routed into TUN device NAME out through it "
                          "(espnic.host.gateway; Linux, root); routes into NAME are yours")
    ike.add_argument("--verbose", "-v", action="count", default=0,
                     help="more log lines (-v: every exchange)")


def run(args) -> int:
    from ..commands import CommandError, database_path, device_urls, session
    from ..config import ConfigError
    from .config import load_ike_config
    from .daemon import IkeDaemon

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("espnic.ike")
    try:
        config = load_ike_config(args.config)
    except ConfigError as error:
        print(f"espnic ike: {error}", file=sys.stderr)
        return 2
    if not config.peers:
        print(f"espnic ike: {args.config}: no [[peer]] table: nothing to negotiate",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    gateway = daemon = None
    try:
        with session(device_urls(args.device), database_path(args.db), allocates=True,
                     notify=lambda line: log.info("reconcile: %s", line)) as controller:
            esp_handler = None
            if args.tun:
                from ..gateway import Gateway
                listen = [a for a in config.listen if a not in ("0.0.0.0", "::")]
                gateway = Gateway(controller.devices[0], tun=args.tun,
                                  local_address=listen[0] if listen else None)
                esp_handler = gateway.esp_in
            try:
                daemon = IkeDaemon(config, controller=controller, esp_handler=esp_handler)
            except OSError as error:
                raise CommandError(f"[ike] listen/port: cannot bind: "
                                   f"{error.strerror or error}") from None
            if gateway is not None:
                gateway.start()
            log.info("listening on %s, ports %d and %d (NAT-T); peers: %s",
                     ", ".join(config.listen), daemon.port, daemon.port_natt,
                     ", ".join(p.name for p in config.peers))
            try:
                daemon.run()
            except KeyboardInterrupt:
                log.info("stopping: deleting the IKE SAs")
            finally:
                daemon.stop(delete=True)
                if gateway is not None:
                    gateway.stop()
                    _log_drops(log, gateway, controller.devices[0])
    except KeyboardInterrupt:
        return 0
    except Exception as error:
        from ..cli import _user_error
        message = _user_error(error)
        if message is None:
            raise
        print(f"espnic ike: {message}", file=sys.stderr)
        return 1
    return 0


#: Device counters that count no drop.
_NOT_DROPS = ("idle", "sent[", "bypassed[", "to_host[")


def _log_drops(log, gateway, device):
    """One line each for what the gateway and the device dropped while running: where
    a lost packet died (gateway counters, then the device's, ``espnic stats``)."""
    counts = gateway.counters()
    log.info("gateway: %s", ", ".join(f"{name} {n}" for name, n in counts.items()
                                      if n and not name.startswith("drop_")))
    drops = {name: n for name, n in counts.items() if n and name.startswith("drop_")}
    try:
        drops.update({f"device {name}": n for name, n in device.counters().items()
                      if n and not name.startswith(_NOT_DROPS)})
    except Exception as error:     # a device gone: the gateway's counts still help
        log.info("gateway: device counters unreadable: %s", error)
    log.info("gateway: dropped %s", ", ".join(f"{name} {n}" for name, n in drops.items())
             or "nothing")


COMMANDS = {"ike": run}
