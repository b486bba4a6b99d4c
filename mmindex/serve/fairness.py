"""Threads for model work, shared fairly between clients, so one client's heavy queries cannot stall everyone.

A Lane holds a few threads. A query that finds none free waits in its client's queue (bounded: past
``client_queue`` waiting queries the client gets 429). When a thread frees up it goes to the waiting client that
has used the least thread time lately (usage decays with a half-life of a few seconds), so a client that sends
one light query now and then goes ahead of clients that keep the lane busy. A query whose request is cancelled
(its deadline passed, its client left) leaves the queue and its work is never started.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import anyio
from starlette.requests import Request

from mmindex.serve.policy import ApiError

T = TypeVar("T")
HALF_LIFE_S = 5.0
LIGHT_TEXT = 256   # characters: longer texts take the heavy lane of their kind


def client_of(request: Request) -> str:
    """The address a request came from: fairness and connection caps are per address."""
    return request.client.host if request.client else "unknown"


class Lane:
    def __init__(self, threads: int, client_queue: int):
        self.free = threads
        self.client_queue = client_queue
        self.waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self.usage: dict[str, tuple[float, float]] = {}   # client -> (thread seconds, as of when)

    async def run(self, client: str, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` on a thread of this lane once the client's turn comes."""
        await self._acquire(client)
        started = time.monotonic()
        try:
            return await anyio.to_thread.run_sync(work, *args)
        finally:
            self._release(client, time.monotonic() - started)

    async def _acquire(self, client: str) -> None:
        if self.free and not self.waiting:
            self.free -= 1
            return
        queue = self.waiting.setdefault(client, deque())
        if len(queue) >= self.client_queue:
            raise ApiError(429, f"too many queries from your address at once (at most {self.client_queue} may "
                           f"wait): wait for the answers before sending more")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._hand_on()  # granted as it was cancelled: the thread goes to the next query
            elif turn in queue:
                queue.remove(turn)
                if not queue and self.waiting.get(client) is queue:
                    del self.waiting[client]
            raise

    def _release(self, client: str, seconds: float) -> None:
        self.usage[client] = (self._used(client) + seconds, time.monotonic())
        if len(self.usage) > 4096:  # forget clients idle longest
            for stale in sorted(self.usage, key=lambda c: self.usage[c][1])[:2048]:
                del self.usage[stale]
        self._hand_on()

    def _used(self, client: str) -> float:
        used, when = self.usage.get(client, (0.0, 0.0))
        return used * math.exp2(-(time.monotonic() - when) / HALF_LIFE_S)

    def _hand_on(self) -> None:
        """A thread freed: to the waiting client that used the least lately, else back to the lane. A turn whose
        task was cancelled (and has not yet left the queue) is skipped."""
        while self.waiting:
            client = min(self.waiting, key=self._used)
            queue = self.waiting[client]
            turn = queue.popleft()
            if not queue:
                del self.waiting[client]
            if not turn.cancelled():
                turn.set_result(None)
                return
        self.free += 1


class Lanes:
    """A lane per kind of query (its set of parts, and whether its text is long): a queue of slow speech
    queries holds the speech lane, and long texts one thread of their own, never the threads short texts need."""

    def __init__(self, client_queue: int):
        self.client_queue = client_queue
        self.lanes: dict[tuple[frozenset[str], bool], Lane] = {}

    async def run(self, client: str, parts: frozenset[str], text: str | None, work: Callable[..., T],
                  *args: object) -> T:
        key = (parts, len(text or "") > LIGHT_TEXT)
        lane = self.lanes.get(key) or self.lanes.setdefault(key, Lane(1 if key[1] else 2, self.client_queue))
        return await lane.run(client, work, *args)
