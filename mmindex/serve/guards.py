"""ASGI middleware that guards every request: who may connect, how large a body may be, how long it may take.

Each answers a refused request itself with the API's error shape, before the routes see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from mmindex.serve.policy import error_body

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
    """A refusal before the request's body was read: the connection closes after it (what is left of the body
    would otherwise be read as the next request, or hold the connection)."""
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware over HTTP requests; other scopes (lifespan) pass through untouched."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.guard(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class TokenAuth(Guard):
    """Bearer-token auth for a server other machines can reach. A browser opens ``/?token=T`` once: the
    token is then kept in an HttpOnly cookie, so the page, its images and its audio work without a header.
    Every offered token is compared in constant time; the cookie is set only from a valid one, and holds the
    server's own token: nothing a request sends reaches a response header."""

    def __init__(self, app: App, token: str):
        super().__init__(app)
        self.token = token.encode()

    async def guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, credentials = headers.get(b"authorization", b"").strip().partition(b" ")
        from_header = credentials.strip() if scheme.lower() == b"bearer" else b""  # schemes are case-insensitive
        from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0].encode("latin-1")
        cookie = SimpleCookie()
        with contextlib.suppress(CookieError):  # a malformed Cookie header offers no token
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        from_cookie = cookie[COOKIE].value.encode("latin-1") if COOKIE in cookie else b""
        valid = [hmac.compare_digest(offered, self.token) for offered in (from_header, from_query, from_cookie)]
        if not any(valid):
            await send_error(send, 401, "a token is required: send 'Authorization: Bearer TOKEN' (or open the "
                             "page as /?token=TOKEN)", [(b"www-authenticate", b"Bearer")])
            return
        if not valid[1] or valid[2]:  # the cookie is set from a valid ?token= only, and only once
            await self.app(scope, receive, send)
            return
        cookie_header = (f"{COOKIE}={self.token.decode()}; Path=/; SameSite=Strict; HttpOnly"
                         f"{'; Secure' if scope.get('scheme') == 'https' else ''}").encode()

        async def set_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie_header)]
            await send(message)

        await self.app(scope, receive, set_cookie)


class BodyLimit(Guard):
    """Refuses a body over ``limit`` bytes: at once when Content-Length says so, else when the bytes read
    pass it (a chunked upload). Bodies being received at once share ``budget`` bytes (a chunked one counts as
    ``limit``): past it a request is answered 503, so many uploads together cannot exhaust memory."""

    def __init__(self, app: App, limit: int, budget: int):
        super().__init__(app)
        self.limit, self.budget = limit, budget
        self.reserved = 0

    async def guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await send_error(send, 413 if declared.isdigit() else 400,
                             str(BodyTooLarge(self.limit)) if declared.isdigit() else "bad Content-Length")
            return
        size = self.limit if b"transfer-encoding" in headers else int(declared)
        if size and self.reserved + size > self.budget:
            await send_error(send, 503, "the server is receiving too many uploads at once: try again soon")
            return
        self.reserved += size
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.reserved -= size


class Timeout(Guard):
    """Answers 503 when a request has not started its response within ``seconds``. Streaming a member may
    then take as long as the client needs."""

    def __init__(self, app: App, seconds: float):
        super().__init__(app)
        self.seconds = seconds

    async def guard(self, scope: Scope, receive: Receive, send: Send) -> None:
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
