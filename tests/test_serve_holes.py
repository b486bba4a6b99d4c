"""The holes a hostile client found in `mmindex serve` (issue 22), each against the session's real server: what
used to be a 500, an echoed cookie, a silent wrong answer or a traceback is now a 4xx with {"error"} (or one
line and exit status 2)."""

from __future__ import annotations

import http.client
import json

import pytest
import requests
from typer.testing import CliRunner

from mmindex.cli import app
from serve_cases import BOMB, TOKEN

SURROGATE = b'"cat \\ud800"'   # JSON may escape a lone surrogate; no encoder can take it


def send(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    connection.request(method, path, body=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                         "Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    return response, response.read()


@pytest.mark.parametrize("path, body", [
    ("/search", b'{"text": ' + SURROGATE + b"}"),
    ("/knn-service", b'{"text": ' + SURROGATE + b', "indice_name": "demo"}'),
    ("/search", b'{"text": "a cat", "dataset": "\\udfff"}'),
])
def test_a_lone_surrogate_in_a_text_is_a_422(server, path, body):
    response, answer = send(server, "POST", path, body)
    assert response.status == 422 and "Unicode" in json.loads(answer)["error"], answer


def test_a_range_with_thousands_of_digits_is_ignored_not_a_500(server):
    path = f"/media/demo/{server.key('chelsea_cat')}/image"
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=0-" + "1" * 5000, "bytes=-" + "5" * 5000):
        response, answer = send(server, "GET", path, headers={"Range": header})
        assert response.status == 200 and len(answer) == int(response.getheader("content-length")), header


@pytest.mark.parametrize("weights", [{"text": 1e308}, {"text": 1e38}, {"text": -1e300}, {"text": 101},
                                     {"text": 10**400}, {"image": True}])
def test_weights_out_of_range_are_refused_not_answered_wrong(server, weights):
    body = json.dumps({"text": "a photo of a cat", "weights": weights}).encode()
    response, answer = send(server, "POST", "/search", body)
    assert response.status == 422 and "from -100 to 100" in json.loads(answer)["error"], answer


def test_large_weights_within_range_still_rank_the_cat_first(server):
    hits = server.search(text="a photo of a cat", weights={"text": 100}, modality="image", k=3).json()["hits"]
    assert hits[0]["key"] == server.key("chelsea_cat") and hits[0]["score"] > 0


def test_the_bomb_message_names_the_documented_limit(server):
    response = server.search(image=BOMB)
    assert response.status_code == 413 and "40,000,000" in response.json()["error"], response.text


def test_knn_service_holds_texts_to_the_same_limit_as_search(server):
    huge = {"text": "cat " * 20_000, "indice_name": "demo", "modality": "image", "num_images": 2}
    response = requests.post(f"{server.url}/knn-service?token={TOKEN}", json=huge, timeout=60)
    assert response.status_code == 413 and "text is over the limit" in response.json()["error"]
    longest = {**huge, "text": "a photo of a cat " + "猫" * 20_000}   # under 64 KiB, cut to what models read
    response = requests.post(f"{server.url}/knn-service?token={TOKEN}", json=longest, timeout=60)
    assert response.status_code == 200 and len(response.json()) == 2


def test_the_bearer_scheme_is_case_insensitive(server):
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = requests.get(f"{server.url}/info", headers={"Authorization": f"{scheme} {TOKEN}"}, timeout=10)
        assert response.status_code == 200, scheme
    assert requests.get(f"{server.url}/info", headers={"Authorization": f"Basic {TOKEN}"},
                        timeout=10).status_code == 401


@pytest.mark.parametrize("offered", ["evil; Domain=example.com; Max-Age=99999", "zzz", "a\r\nSet-Cookie: x=1",
                                     TOKEN + "x"])
def test_a_query_token_sets_no_cookie_unless_it_is_the_token(server, offered):
    """Not as the only credential (401), nor beside a valid header or cookie (200, no Set-Cookie)."""
    alone = requests.get(f"{server.url}/", params={"token": offered}, timeout=10)
    assert alone.status_code == 401 and "set-cookie" not in alone.headers
    with_header = server.http.get(f"{server.url}/info", params={"token": offered}, timeout=10)
    assert with_header.status_code == 200 and "set-cookie" not in with_header.headers
    with_cookie = requests.get(f"{server.url}/info", params={"token": offered},
                               cookies={"mmindex_token": TOKEN}, timeout=10)
    assert with_cookie.status_code == 200 and "set-cookie" not in with_cookie.headers


def test_the_cookie_holds_the_servers_token_with_its_attributes(server):
    response = requests.get(f"{server.url}/", params={"token": TOKEN}, timeout=10)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"mmindex_token={TOKEN};")
    assert {"Path=/", "SameSite=Strict", "HttpOnly"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie   # plain HTTP here; behind HTTPS the cookie is Secure


@pytest.mark.parametrize("args, says", [
    (["--timeout", "0"], "--timeout"), (["--timeout", "-1"], "--timeout"), (["--timeout", "nan"], "--timeout"),
    (["--timeout", "inf"], "--timeout"), (["--port", "70000"], "--port"), (["--port", "-1"], "--port"),
    (["--max-upload", "0"], "--max-upload"), (["--max-upload", "lots"], "--max-upload"),
    (["--max-upload", "5GB"], "--max-upload"), (["--token", "bad token;x"], "--token"),
    (["--per-client", "0"], "--per-client"),
])
def test_bad_options_get_one_line_and_exit_2(args, says):
    result = CliRunner().invoke(app, ["serve", "--dataset", "/no/such/dataset", *args])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_images_in_a_knn_answer_are_held_to_the_upload_limit(server):
    """include_image reads every hit's image: the answer may carry no more than a request may send."""
    asked = {"text": "a photo", "indice_name": "demo", "modality": "image", "num_images": 4, "include_image": True}
    response = requests.post(f"{server.url}/knn-service?token={TOKEN}", json=asked, timeout=60)
    assert response.status_code == 413 and "num_images" in response.json()["error"], response.text[:200]
    one = requests.post(f"{server.url}/knn-service?token={TOKEN}", json={**asked, "num_images": 1}, timeout=60)
    assert one.status_code == 200 and "image" in one.json()[0]
