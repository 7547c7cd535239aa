# SPDX-License-Identifier: BSD-2-Clause
"""``model://``: the reference model of the device, in-process, behind a byte port.

``model://`` is a device built with :class:`~espnic.hdl.top.EspNic`'s defaults
(``espnic sim``'s default device); ``model://?engines=2&ports=2&slots=64`` sets
parameters by their ``EspNic`` keyword (integers; ``nested`` and ``ethernet``
``0``/``1``; ``profile`` by name). The port speaks the same frames as a board,
so everything above it (:class:`~espnic.host.link.FrameLink`, the driver, the
controller) runs unchanged on :class:`~espnic.sim.model.device.DeviceModel`.
"""

import threading
import time
from urllib.parse import parse_qs, urlsplit

__all__ = ["ModelPort", "model_parameters", "model_url"]


def model_parameters(url: str) -> dict:
    """The ``EspNic`` parameters a ``model://`` URL names (the omitted take defaults)."""
    from ...hdl.bridge.regmap import nic_parameters

    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"a model:// URL takes parameters as a query "
                         f"(model://?engines=2), not {url!r}")
    known = nic_parameters()
    params = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name not in known:
            raise ValueError(f"unknown parameter {name!r} in device URL {url!r}; "
                             f"known: {', '.join(known)}")
        value = values[-1]
        if name == "profile":
            params[name] = value
            continue
        try:
            number = int(value, 0)
        except ValueError:
            raise ValueError(f"{name} must be an integer in device URL {url!r}, "
                             f"not {value!r}") from None
        params[name] = bool(number) if name in ("nested", "ethernet") else number
    return params


def model_url(params: dict) -> str:
    """The ``model://`` URL of a device with ``params`` (as
    :attr:`Device.params <espnic.host.device.Device.params>` gives them): a model
    of the device behind another URL."""
    query = []
    for name, value in params.items():
        if name == "ethernet" and not isinstance(value, bool):
            if len(set(value)) > 1:
                raise ValueError("not supported: a model:// URL of a device with some "
                                 "ports Ethernet and some not")
            value = any(value)
        query.append(f"{name}={value if name == 'profile' else int(value)}")
    return "model://?" + "&".join(query)


class ModelPort:
    """A pyserial-like port whose far end is a :class:`DeviceModel`."""

    def __init__(self, url: str = "model://", *, timeout: float = 0.05):
        from ...sim.model.device import DeviceModel

        self.timeout = timeout
        self.device = DeviceModel(**model_parameters(url))
        self._pending = bytearray()
        self._lock = threading.Lock()

    @property
    def in_waiting(self) -> int:
        return len(self._pending)

    def write(self, octets: bytes) -> int:
        with self._lock:
            self._pending += self.device.feed(bytes(octets))
        return len(octets)

    def read(self, size: int = 1) -> bytes:
        with self._lock:
            got = bytes(self._pending[:size])
            del self._pending[:size]
        if not got and self.timeout:
            # Nothing will come but in answer to a write: wait as a serial port would.
            time.sleep(self.timeout)
        return got

    def close(self):
        pass
