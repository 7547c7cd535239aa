# SPDX-License-Identifier: BSD-2-Clause
"""Byte ports to a device, by URL.

``open_port(url)`` gives an object with pyserial's ``read(n)``, ``write(data)``,
``timeout`` and ``close()``:

* ``socket://HOST:PORT`` (the simulated device server), ``loop://`` and serial
  device paths (``/dev/ttyUSB1``, ``COM3``; ``?baud=N``, default 115200) through
  pyserial's ``serial_for_url``;
* ``model://`` (``?engines=2&...``): the reference model in-process
  (:mod:`.model`).

Not built yet, and refused with a ``not supported`` error rather than pretending:
``pcie://`` (a memory-mapped BAR: the gateware has no PCIe endpoint to map).
"""

from urllib.parse import parse_qs, urlsplit

__all__ = ["open_port", "NotSupported", "DEFAULT_BAUD"]

DEFAULT_BAUD = 115200


class NotSupported(RuntimeError):
    pass


def open_port(url: str, *, timeout: float = 0.05):
    """A pyserial port for ``url`` whose ``read`` returns after at most ``timeout`` s."""
    import serial

    scheme = urlsplit(url).scheme
    if scheme == "pcie":
        raise NotSupported("not supported: pcie:// device URLs (no PCIe endpoint in the "
                           "gateware yet)")
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
