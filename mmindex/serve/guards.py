"""ASGI middleware that guards every request: who may connect, how large a body may be, how long it may take.

Each answers a refused request itself with the API's error shape, before the routes see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
COOKIE = "mmindex_token"
OPEN_PATHS = ("/healthz",)


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the request body is over the limit of {limit:,} bytes: send a smaller image or clip")


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class TokenAuth:
    """Bearer-token auth for a server other machines can reach. A browser opens ``/?token=T`` once: the
    token is then kept in an HttpOnly cookie, so the page, its images and its audio work without a header."""

    def __init__(self, app: App, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        cookie = SimpleCookie()
        with contextlib.suppress(CookieError):  # a malformed Cookie header offers no token
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        offered = [headers.get(b"authorization", b"").removeprefix(b"Bearer ").strip(), from_query.encode(),
                   cookie[COOKIE].value.encode() if COOKIE in cookie else b""]
        if not any(hmac.compare_digest(value, self.token) for value in offered if value):
            await send_error(send, 401, "a token is required: send 'Authorization: Bearer TOKEN' (or open the "
                             "page as /?token=TOKEN)", [(b"www-authenticate", b"Bearer")])
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def set_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", f"{COOKIE}={from_query}; "
                                      f"HttpOnly; SameSite=Strict; Path=/".encode())]
            await send(message)

        await self.app(scope, receive, set_cookie)


class BodyLimit:
    """Refuses a body over ``limit`` bytes: at once when Content-Length says so, else when the bytes read
    pass it (a chunked upload)."""

    def __init__(self, app: App, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await send_error(send, 413 if declared.isdigit() else 400,
                             str(BodyTooLarge(self.limit)) if declared.isdigit() else "bad Content-Length")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


class Timeout:
    """Answers 503 when a request has not started its response within ``seconds``. Streaming a member may
    then take as long as the client needs."""

    def __init__(self, app: App, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, late = asyncio.Event(), False

        async def watched(message: Message) -> None:
            if not late:  # once the 503 is sent, whatever the request still answers is dropped
                started.set()
                await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, watched))
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait({task, waiter}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not started.is_set() and not task.done():
            late = True
            await send_error(send, 503, f"the request took longer than {self.seconds:g} s: try again, or send a "
                             f"smaller query")
            task.cancel()  # a model call already running in a thread finishes there; its result is dropped
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        await task
