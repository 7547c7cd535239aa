# SPDX-License-Identifier: BSD-2-Clause
"""A :class:`DeviceModel` behind a TCP port: a device that outlives its clients,
as ``espnic sim``'s server or a board does, in milliseconds and without Verilator."""

import select
import socket
import threading

from espnic.sim.model.device import DeviceModel

__all__ = ["ModelServer"]


class ModelServer:
    """A :class:`DeviceModel` serving its host link on a TCP port of 127.0.0.1, one
    client at a time, its state kept from one client to the next (as a board's
    across host restarts)."""

    def __init__(self, **params):
        self.model = DeviceModel(**params)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            if not select.select([self._listener], [], [], 0.05)[0]:
                continue
            client, _ = self._listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with client:
                while not self._stop:
                    if not select.select([client], [], [], 0.05)[0]:
                        continue
                    try:
                        wire = client.recv(65536)
                    except ConnectionError:
                        break
                    if not wire:
                        break
                    answer = self.model.feed(wire)
                    if answer:
                        try:
                            client.sendall(answer)
                        except ConnectionError:
                            break

    def close(self):
        self._stop = True
        self._thread.join()
        self._listener.close()
