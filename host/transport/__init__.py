# SPDX-License-Identifier: BSD-2-Clause
"""Links and byte ports to a device, by URL.

``open_link(url)`` gives what :class:`~espnic.host.device.Device` talks through: a
:class:`~espnic.host.transport.bar.BarLink` for ``pcie://`` (a memory-mapped BAR,
:mod:`.bar`), else a :class:`~espnic.host.link.FrameLink` on ``open_port(url)``.

``open_port(url)`` gives an object with pyserial's ``read(n)``, ``write(data)``,
``timeout`` and ``close()``:

* ``socket://HOST:PORT`` (the simulated device server), ``loop://`` and serial
  device paths (``/dev/ttyUSB1``, ``COM3``; ``?baud=N``, default 115200) through
  pyserial's ``serial_for_url``;
* ``model://`` (``?engines=2&...``): the reference model in-process
  (:mod:`.model`).

``pcie://DOMAIN:BUS:DEV.FN`` (``?bar=N``) or ``pcie:///sys/.../resourceN`` is no
byte port: it maps the device's BAR (``host/transport/bar.py``). No board of this
project has a PCIe endpoint; the BAR side (``hdl/bridge/bar.py``) is tested in
simulation.
"""

from urllib.parse import parse_qs, urlsplit

__all__ = ["open_port", "open_link", "NotSupported", "DEFAULT_BAUD"]

DEFAULT_BAUD = 115200


class NotSupported(RuntimeError):
    pass


def open_port(url: str, *, timeout: float = 0.05):
    """A pyserial port for ``url`` whose ``read`` returns after at most ``timeout`` s."""
    import serial

    scheme = urlsplit(url).scheme
    if scheme == "pcie":
        raise NotSupported("not supported: pcie:// as a byte port (it is a memory-mapped "
                           "BAR, no frames: open it with open_link or Device.open)")
    if scheme == "model":
        from .model import ModelPort
        return ModelPort(url, timeout=timeout)
    if scheme in ("socket", "loop"):
        return serial.serial_for_url(url, timeout=timeout)
    path, _, query = url.partition("?")
    options = parse_qs(query)
    unknown = set(options) - {"baud"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} in device URL {url!r}; "
                         f"known: baud")
    try:
        baud = int(options.get("baud", [DEFAULT_BAUD])[0])
    except ValueError:
        raise ValueError(f"baud must be an integer in device URL {url!r}") from None
    return serial.serial_for_url(path, baudrate=baud, timeout=timeout)


def open_link(url: str, *, timeout: float = 1.0, retries: int = 3):
    """The link :class:`~espnic.host.device.Device` uses for ``url``: a ``BarLink`` on
    a ``pcie://`` BAR (``retries`` do not apply: nothing is lost on a BAR), else a
    ``FrameLink`` on :func:`open_port`."""
    if urlsplit(url).scheme == "pcie":
        from .bar import open_bar_link
        return open_bar_link(url, timeout=timeout)
    from ..link import FrameLink
    return FrameLink(open_port(url), timeout=timeout, retries=retries)
