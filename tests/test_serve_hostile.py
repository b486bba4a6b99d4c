"""Hostile clients against the server's connection gate (connections.py) and its fair lanes (fairness.py): idle,
slowloris and slow-upload connections, a flood from one address and from many, a heavy client's queue. The gate
runs in front of the real app on uvicorn in a thread (no models needed), its limits lowered so a few hundred
connections reach them in seconds. Normal clients connect from 127.0.0.2, attackers from 127.0.0.1 and others
(all of 127.0.0.0/8 is this machine)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import time

import pytest

from mmindex.serve.app import create_app
from mmindex.serve.fairness import Lane
from mmindex.serve.policy import ApiError
from mmindex.serve.run import protocol
from mmindex.serve.settings import ServeLimits, ServeSettings
from serve_cases import TOKEN
from serving import running

pytestmark = pytest.mark.hostile
LIMITS = ServeLimits(connections=64, client_connections=8, header_timeout_s=1.0, body_timeout_s=1.0)


@pytest.fixture(scope="module")
def gated():
    """The app with no dataset (/healthz answers) behind the gate, with LIMITS."""
    server, thread, url = running(create_app(ServeSettings(("unused",), limits=LIMITS), {}), **protocol(LIMITS))
    yield url.removeprefix("http://").split(":")[0], int(url.rsplit(":", 1)[1])
    server.should_exit = True
    thread.join()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return client


def healthz(port: int, source: str = "127.0.0.2") -> int:
    """A normal client's request: its status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    connection.request("GET", "/healthz")
    status = connection.getresponse().status
    connection.close()
    return status


def closed_within(client: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before it closed the connection, or None if it stayed open ``seconds``."""
    client.settimeout(seconds)
    received = b""
    try:
        while chunk := client.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def error_of(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_idle_connections_from_one_address_are_capped_and_closed_and_others_are_served(gated):
    _, port = gated
    idle = [connect(port) for _ in range(300)]
    try:
        assert healthz(port) == 200   # another address is served at once
        refused = [closed_within(c, 0.5) for c in idle]
        answers = [error_of(r) for r in refused if r]
        assert len(answers) == 300 - LIMITS.client_connections
        assert {status for status, _ in answers} == {429} and "too many connections" in answers[0][1]
        kept = [c for c, r in zip(idle, refused, strict=True) if r is None]
        assert all(closed_within(c, LIMITS.header_timeout_s + 1) == b"" for c in kept)  # idle: closed, no answer
    finally:
        for client in idle:
            client.close()


def test_a_flood_from_many_addresses_closes_the_idle_connections_so_healthz_answers(gated):
    _, port = gated
    idle = [connect(port, f"127.0.1.{n % 200 + 1}") for n in range(200)]   # one each: under the per-address cap
    try:
        time.sleep(0.2)
        assert healthz(port) == 200
        still_open = sum(closed_within(c, 0.01) is None for c in idle)
        assert still_open <= LIMITS.connections   # the oldest idle ones made room
    finally:
        for client in idle:
            client.close()


def test_slowloris_headers_and_slow_bodies_meet_their_deadlines(gated):
    _, port = gated
    slow_headers = [connect(port, "127.0.2.1") for _ in range(4)]
    slow_bodies = [connect(port, "127.0.2.2") for _ in range(4)]
    for client in slow_headers:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for client in slow_bodies:
        client.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    while time.monotonic() - started < LIMITS.header_timeout_s + 0.5:   # a byte every 0.2 s: never idle
        for client in slow_headers + slow_bodies:
            with contextlib.suppress(OSError):
                client.sendall(b"X")
        time.sleep(0.2)
        assert healthz(port) == 200
    for client in slow_headers:
        assert closed_within(client, 2) == b""
    for client in slow_bodies:
        status, message = error_of(closed_within(client, 2))
        assert status == 408 and "did not arrive" in message
        client.close()


def test_a_keep_alive_connection_is_closed_when_it_idles_past_the_deadline(gated):
    _, port = gated
    client = connect(port, "127.0.3.1")
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    client.settimeout(5)
    assert b"200 OK" in client.recv(4096)
    client.sendall(b"GET /heal")   # a second request that never ends
    assert closed_within(client, LIMITS.header_timeout_s + 2) == b""


def test_a_lane_serves_the_client_that_used_it_least_first_and_drops_cancelled_work():
    """A heavy client keeps a one-thread lane busy with a queue; a newcomer's query runs next, ahead of the
    heavy client's queue; a query cancelled while it waits never runs; past the client's queue bound, 429."""
    async def scenario() -> tuple[list[str], ApiError | None]:
        lane, ran = Lane(threads=1, client_queue=3), []

        def work(name: str) -> str:
            time.sleep(0.05)
            ran.append(name)
            return name

        heavy = [asyncio.create_task(lane.run("heavy", work, f"heavy{n}")) for n in range(4)]
        await asyncio.sleep(0.01)
        refused = None
        try:
            await lane.run("heavy", work, "one too many")
        except ApiError as err:
            refused = err
        dropped = heavy[3]
        dropped.cancel()
        newcomer = asyncio.create_task(lane.run("newcomer", work, "newcomer"))
        await asyncio.gather(*heavy[:3], newcomer)
        with contextlib.suppress(asyncio.CancelledError):
            await dropped
        return ran, refused

    ran, refused = asyncio.run(scenario())
    assert ran[:2] == ["heavy0", "newcomer"] and "heavy3" not in ran and len(ran) == 4
    assert refused is not None and refused.status == 429


def test_the_real_server_keeps_answering_past_300_idle_connections(server):
    """`mmindex serve` itself (the session's server): uvicorn alone answered everyone 503 from 256 on."""
    port = int(server.url.rsplit(":", 1)[1])
    idle = [connect(port) for _ in range(300)]
    try:
        time.sleep(0.3)
        assert healthz(port) == 200
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
        other.request("POST", "/search", json.dumps({"text": "a photo of a cat", "k": 1}),
                      {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        answer = other.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["hits"]
    finally:
        for client in idle:
            client.close()


def test_a_thread_freed_as_a_waiting_query_is_cancelled_goes_back_to_the_lane():
    """The deadline cancels a waiting query in the same turn of the loop as a thread frees up: the thread
    skips it (it is no longer waiting) and nothing is lost or handed out twice."""
    async def scenario() -> Lane:
        lane = Lane(threads=1, client_queue=3)
        await lane._acquire("a")   # a holds the lane's one thread
        waiting = asyncio.create_task(lane.run("b", time.sleep, 0))
        await asyncio.sleep(0.01)
        waiting.cancel()
        lane._release("a", 0.0)    # and frees it in the same turn of the loop
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return lane

    lane = asyncio.run(scenario())
    assert lane.waiting == {} and lane.free == 1


def test_a_body_of_more_json_values_than_any_request_needs_is_refused_unparsed(gated):
    """Parsing holds the event loop: 1.5 M numbers (20 MB) held every client for 0.4 s."""
    _, port = gated
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.5.1", 0))
    connection.request("POST", "/knn-service", b'{"embedding_input": [' + b",".join([b"0"] * 150_000) + b"]}",
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413 and "values" in json.loads(response.read())["error"]


def test_uploads_received_at_once_share_a_budget():
    """Two slow 1,000-byte uploads hold a 2,500-byte budget: a third is answered 503 at once, and once one
    ends another fits."""
    limits = ServeLimits(upload_bytes=1000, bodies_bytes=2500)
    server, thread, url = running(create_app(ServeSettings(("unused",), limits=limits), {}), **protocol(limits))
    port = int(url.rsplit(":", 1)[1])
    head = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    try:
        slow = [connect(port, f"127.0.6.{n}") for n in (1, 2, 3)]
        for client in slow[:2]:
            client.sendall(head)
        time.sleep(0.3)
        slow[2].sendall(head)
        status, message = error_of(closed_within(slow[2], 5))
        assert status == 503 and "too many uploads" in message
        slow[0].close()
        time.sleep(0.3)
        again = connect(port, "127.0.6.4")
        again.sendall(head + b'{"k": 0, "text": "' + b"a" * 980 + b'"}')
        again.settimeout(10)
        assert b"422" in again.recv(4096).split(b"\r\n")[0]   # read and checked (no dataset here): not refused
        slow.append(again)
    finally:
        for client in slow:
            client.close()
        server.should_exit = True
        thread.join()
