"""The converter child's guards: no network while converters run, and a copy of what they print.

Every outbound connection is refused while :func:`network_guard` is on, and each attempt is
recorded, so a future onnx2tf that fetches something fails loudly instead of silently depending
on the network. :func:`captured_stdout` keeps what the converters print (for the error message)
while still printing it.
"""
from __future__ import annotations

import contextlib
import io
import socket
import sys
import re
from collections import deque
from typing import Any, Iterator

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NetworkBlockedError(ConnectionRefusedError):
    """Raised instead of opening an outbound connection while the guard is on."""


_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1"}


@contextlib.contextmanager
def network_guard() -> Iterator[list[str]]:
    """Refuse name lookups of non-local hosts and IPv4/IPv6 connections; yields the list of
    attempts (``"host:port"``) so the caller can report them."""
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo, real_create = socket.getaddrinfo, socket.create_connection

    def refuse(what: str) -> NetworkBlockedError:
        attempts.append(what)
        return NetworkBlockedError(f"network access blocked during conversion: {what}")

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in _LOCAL_HOSTS:
            raise refuse(f"{host}:{port}")
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL_HOSTS:
            raise refuse(f"{address[0]}:{address[1]}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL_HOSTS:
            raise refuse(f"{address[0]}:{address[1]}")
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        if address[0] not in _LOCAL_HOSTS:
            raise refuse(f"{address[0]}:{address[1]}")
        return real_create(address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
        socket.getaddrinfo, socket.create_connection = real_getaddrinfo, real_create



class Tee(io.TextIOBase):
    """Writes through to the real stream and keeps the last lines (ANSI colours removed)."""

    def __init__(self, stream: Any, keep: int = 400) -> None:
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        self.lines.extend(_ANSI.sub("", line).rstrip() for line in done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def last_error(self) -> str | None:
        """The last line onnx2tf printed with its ``ERROR:`` prefix, without the prefix."""
        for line in reversed(self.lines):
            if line.strip().startswith("ERROR:") and line.strip() != "ERROR:":
                return line.strip()[len("ERROR:"):].strip()
        return None


@contextlib.contextmanager
def captured_stdout() -> Iterator[Tee]:
    tee = Tee(sys.stdout)
    real = sys.stdout
    sys.stdout = tee  # type: ignore[assignment]
    try:
        yield tee
    finally:
        sys.stdout = real
