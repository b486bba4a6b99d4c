"""Connection-level defences, in uvicorn's own HTTP/1.1 protocol (h11): uvicorn never times out a connection
that has not sent its first request, and its only cap (``limit_concurrency``) answers everyone 503 once idle
connections reach it. Here every connection of one server is admitted by a Gate:

- from one address at most ``client_connections`` at once; more are answered 429 and closed;
- at most ``connections`` in all; past it the connection idle longest (one that never finished a request
  first) is closed to make room, and only when every connection is busy is a new one answered 503;
- a request's line and headers must arrive within ``header_timeout_s`` of the connection being ready for them
  (idle keep-alive connections are closed so too), its body within ``body_timeout_s`` of its headers (408).

Every refusal is the API's JSON error shape. A connection that has sent its request is the app's: its time is
bounded by the Timeout guard (guards.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from mmindex.serve.policy import error_body
from mmindex.serve.settings import ServeLimits

WAITING, READING, WORKING = "waiting", "reading", "working"   # for a request, for its body, on it


def raw_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with the API's error shape, for a connection about to be closed."""
    body = error_body(message)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class Gate:
    """The connections of one server, by address."""

    def __init__(self, limits: ServeLimits):
        self.limits = limits
        self.open: set[GuardedH11] = set()
        self.by_address: dict[str, int] = {}

    def admit(self, connection: GuardedH11) -> bytes | None:
        """None when ``connection`` may stay (counted from now on), else the response that refuses it."""
        limits, address = self.limits, connection.address
        if self.by_address.get(address, 0) >= limits.client_connections:
            return raw_error(429, "Too Many Requests", f"too many connections from your address (at most "
                             f"{limits.client_connections} at once): reuse one, or close some")
        if len(self.open) >= limits.connections and not self._evict_idle():
            return raw_error(503, "Service Unavailable", "the server is busy with other connections: try again soon")
        self.open.add(connection)
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return None

    def forget(self, connection: GuardedH11) -> None:
        if connection in self.open:
            self.open.discard(connection)
            left = self.by_address[connection.address] - 1
            if left:
                self.by_address[connection.address] = left
            else:
                del self.by_address[connection.address]

    def _evict_idle(self) -> bool:
        """Closes the connection that has waited longest for a request (one that never finished one first)."""
        idle = [c for c in self.open if c.phase == WAITING and not c.transport.is_closing()]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (c.served > 0, c.since))
        self.forget(victim)
        victim.transport.close()
        return True


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol admitted by a Gate, with deadlines on each request's headers and body."""

    def __init__(self, *args: Any, gate: Gate, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.address = "unknown"
        self.phase = WAITING
        self.since = time.monotonic()   # when the phase began
        self.served = 0                 # requests answered on this connection
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_cycle: object = None   # the request whose body the deadline is timing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else "unknown"
        refusal = self.gate.admit(self)
        if refusal is not None:
            transport.write(refusal)
            transport.close()
            return
        self._enter(WAITING, self.gate.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.gate.forget(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        if cycle.more_body and self._reading_cycle is not cycle:
            self._reading_cycle = cycle
            self._enter(READING, self.gate.limits.body_timeout_s)
        elif not cycle.more_body and self.phase != WORKING:
            self._enter(WORKING, None)

    def on_response_complete(self) -> None:
        self.served += 1
        if not self.transport.is_closing():
            self._enter(WAITING, self.gate.limits.header_timeout_s)
        super().on_response_complete()  # may start a pipelined request: handle_events moves the phase on

    def send_400_response(self, msg: str) -> None:
        """A request that is not HTTP/1.1 (a control character in a header, say): the API's error shape."""
        self.transport.write(raw_error(400, "Bad Request", f"not a valid HTTP/1.1 request: {msg}"))
        self.transport.close()

    def _enter(self, phase: str, seconds: float | None) -> None:
        self._disarm()
        self.phase, self.since = phase, time.monotonic()
        if seconds is not None:
            self._deadline = self.loop.call_later(seconds, self._late, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self, phase: str) -> None:
        """A deadline passed: an idle or slow connection is closed; a slow body is answered 408 first."""
        if self.transport.is_closing() or self.phase != phase:
            return
        if phase == READING:
            self.transport.write(raw_error(408, "Request Timeout", f"the request's body did not arrive within "
                                           f"{self.gate.limits.body_timeout_s:g} s"))
        self.gate.forget(self)
        self.transport.close()
