"""A small QMP client over a unix socket (QEMU's JSON machine protocol)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from vmci.testing.qemu.files import QemuError

# -- QMP ---------------------------------------------------------------------------------------


class Qmp:
    """A minimal QMP client: JSON lines over a unix socket, events kept in :attr:`events`."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._buf = b""
        self._next_id = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        greeting = self._read_message(timeout)
        if "QMP" not in greeting:
            raise QemuError(f"unexpected QMP greeting: {greeting}")
        self.greeting = greeting["QMP"]
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self._sock.close()

    def _read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QemuError(f"QMP: no message within {timeout:.0f} s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise QemuError("QMP: connection closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise QemuError(f"QMP: unexpected message {line!r}")
        return msg

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 60.0) -> Any:
        """Run ``command`` and return its ``return`` value; :class:`QemuError` on a QMP error."""
        self._next_id += 1
        req: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            req["arguments"] = arguments
        self._sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(max(deadline - time.monotonic(), 0.001))
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == self._next_id:
                if "error" in msg:
                    err = msg["error"]
                    raise QemuError(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
                return msg.get("return")

    def wait_event(self, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Return (and consume) the first event called ``name``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            msg = self._read_message(max(deadline - time.monotonic(), 0.001))
            if "event" in msg:
                self.events.append(msg)


