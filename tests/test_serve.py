"""`mmindex serve` over HTTP: a real server (the CLI, in its own process) on a localhost port, over a dataset
ingested, embedded (offline space, real models) and indexed from part of the demo corpus (the session's
``server`` fixture, conftest.py)."""

from __future__ import annotations

import base64
import http.client
import importlib.util
import io
import json
import re
import socket
import time
from pathlib import Path

import pytest
import requests
from PIL import Image
from typer.testing import CliRunner

from conftest import embed, ingest, looping
from mmindex.cli import app
from mmindex.demo import CORPUS
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.index.settings import BuildSettings
from serve_cases import BAD_REQUESTS, MULTIPART_MISTAKES, TOKEN, UPLOAD_LIMIT
from serving import Server, running


def test_info_lists_the_dataset_its_space_and_each_index(server: Server):
    assert requests.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}  # open: for load balancers
    info = server.http.get(f"{server.url}/info", timeout=5).json()
    [demo] = info["datasets"]
    assert demo["name"] == "demo" and demo["samples"] == len(server.samples)
    [space] = demo["spaces"]
    assert space["name"] == "offline" and space["query_modalities"] == ["audio", "image", "text"]
    indexes = {index["modality"]: index for index in space["indexes"]}
    with_images = sum("image" in row["modalities"] for row in server.samples.values())
    assert indexes["image"]["count"] == with_images and indexes["image"]["type"] == "Flat"
    assert indexes["text"]["recall"] == 1.0
    assert info["limits"]["upload_bytes"] == UPLOAD_LIMIT
    assert server.http.get(f"{server.url}/openapi.json", timeout=5).json()["paths"]["/search"]["post"]
    docs = server.http.get(f"{server.url}/docs", timeout=5).text
    scripts = re.findall(r'<script src="([^"]+)"', docs)
    assert scripts and all(src.startswith("/") for src in scripts)  # served here: the page works offline
    for asset in [*scripts, *re.findall(r'<link[^>]+href="([^"]+\.css)"', docs)]:
        assert server.http.get(f"{server.url}{asset}", timeout=5).status_code == 200
    assert "<html" in server.http.get(f"{server.url}/", timeout=5).text


def test_a_text_query_finds_the_cat_photo_with_its_media_and_thumbnail(server: Server):
    response = server.search(text="a photo of a cat", k=5)
    assert response.status_code == 200
    body = response.json()
    assert (body["dataset"], body["space"]) == ("demo", "offline") and body["took_ms"] > 0
    first_image = next(hit for hit in body["hits"] if hit["modality"] == "image")
    cat = server.key("chelsea_cat")
    assert first_image["key"] == cat and "cat" in first_image["caption"]
    assert first_image["media"] == {member: f"/media/demo/{cat}/{member}" for member in ("image", "text", "json")}
    assert first_image["thumbnail"] == f"/thumbnail/demo/{cat}"
    assert [hit["rank"] for hit in body["hits"]] == [1, 2, 3, 4, 5]
    only_text = server.search(text="a photo of a cat", modality="text", k=3).json()["hits"]
    assert only_text and {hit["modality"] for hit in only_text} == {"text"}


def test_an_uploaded_image_as_multipart_or_base64_finds_itself(server: Server):
    data = (CORPUS / "photos" / "coffee.jpg").read_bytes()
    multipart = server.http.post(f"{server.url}/search", files={"image": ("coffee.jpg", data, "image/jpeg")},
                                 data={"k": "3", "modality": "image"}, timeout=60).json()
    as_json = server.search(image=base64.b64encode(data).decode(), k=3, modality="image").json()
    assert multipart["hits"] == as_json["hits"]
    assert multipart["hits"][0]["key"] == server.key("coffee") and multipart["hits"][0]["score"] > 0.99


def test_a_spoken_query_finds_its_clip_and_weights_fuse_parts(server: Server):
    clip = (CORPUS / "speech" / "conf_locked.wav").read_bytes()
    spoken = server.search(audio=base64.b64encode(clip).decode(), modality="audio", k=1).json()
    assert spoken["hits"][0]["key"] == server.key("conf_locked")
    assert spoken["hits"][0]["media"]["audio"].endswith("/audio")
    text_only = server.search(text="a photo of a cat", k=4).json()["hits"]
    image = base64.b64encode((CORPUS / "photos" / "coffee.jpg").read_bytes()).decode()
    zero_image = server.search(text="a photo of a cat", image=image, weights={"image": 0}, k=4).json()["hits"]
    fused = server.search(text="a photo of a cat", image=image, k=4).json()["hits"]
    assert zero_image == text_only and fused != text_only


def test_media_are_the_ingested_bytes_with_their_type_and_byte_ranges(server: Server):
    cat = (CORPUS / "photos" / "chelsea_cat.jpg").read_bytes()
    url = f"{server.url}/media/demo/{server.key('chelsea_cat')}/image"
    whole = server.http.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == cat
    assert whole.headers["content-type"] == "image/jpeg" and whole.headers["accept-ranges"] == "bytes"
    size = len(cat)
    for asked, start, end in (("bytes=0-99", 0, 99), ("bytes=1000-", 1000, size - 1),
                              ("bytes=-50", size - 50, size - 1), (f"bytes=100-{size + 500}", 100, size - 1)):
        part = server.http.get(url, headers={"Range": asked}, timeout=10)
        assert part.status_code == 206 and part.content == cat[start:end + 1], asked
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
    for outside in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        beyond = server.http.get(url, headers={"Range": outside}, timeout=10)
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}", outside
        assert beyond.headers["content-type"] == "application/json" and "outside" in beyond.json()["error"]
    for ignored in ("bytes=0-1,5-6", "items=0-5", "bytes=x-y", "bytes=50-10"):  # HTTP lets a server ignore these
        assert server.http.get(url, headers={"Range": ignored}, timeout=10).content == cat, ignored
    clip = server.http.get(f"{server.url}/media/demo/{server.key('conf_locked')}/audio", timeout=10)
    assert clip.content == (CORPUS / "speech" / "conf_locked.wav").read_bytes()
    assert clip.headers["content-type"] == "audio/wav"
    caption = server.http.get(f"{server.url}/media/demo/{server.key('chelsea_cat')}/text", timeout=10)
    assert caption.text == (CORPUS / "photos" / "chelsea_cat.txt").read_text()


def test_thumbnails_are_jpegs_that_fit_the_size_asked(server: Server):
    url = f"{server.url}/thumbnail/demo/{server.key('astronaut')}"
    first = server.http.get(url, params={"size": 64}, timeout=30)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(first.content))
    assert picture.format == "JPEG" and max(picture.size) == 64
    assert server.http.get(url, params={"size": 64}, timeout=30).content == first.content
    assert max(Image.open(io.BytesIO(server.http.get(url, timeout=30).content)).size) == 256


def clip_client_module():
    """clip-retrieval's own client module (its package's __init__ imports its heavy back end, so the one file)."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "clip_client.py"
    module_spec = importlib.util.spec_from_file_location("clip_client", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_clip_retrieval_client_gets_its_result_shape(server: Server, tmp_path: Path):
    assert server.http.get(f"{server.url}/indices-list", timeout=5).json() == ["demo"]
    knn = f"{server.url}/knn-service?token={TOKEN}"  # ClipClient sends no headers: the token rides in the URL
    module = clip_client_module()
    if module is not None:
        client = module.ClipClient(url=knn, indice_name="demo", num_images=3)
        by_text = client.query(text="a photo of a cat")
        image = tmp_path / "cat.jpg"
        image.write_bytes((CORPUS / "photos" / "chelsea_cat.jpg").read_bytes())
        by_image = client.query(image=str(image))
        captions = module.ClipClient(url=knn, indice_name="demo", num_images=2,
                                     modality=module.Modality.TEXT).query(text="a photo of a cat")
    else:  # the request ClipClient documents
        def post(**fields):
            return requests.post(knn, data=json.dumps({"indice_name": "demo", "num_images": 3, "modality": "image",
                                                       "deduplicate": True, **fields}), timeout=60).json()
        by_text, by_image = post(text="a photo of a cat"), post(image=base64.b64encode(
            (CORPUS / "photos" / "chelsea_cat.jpg").read_bytes()).decode())
        captions = post(text="a photo of a cat", modality="text", num_images=2)
    cat = server.key("chelsea_cat")
    assert [set(hit) >= {"id", "similarity", "url", "caption"} for hit in by_text] == [True] * 3
    assert by_text[0]["key"] == cat and isinstance(by_text[0]["id"], int)
    assert by_text[0]["similarity"] >= by_text[1]["similarity"]
    assert requests.get(by_text[0]["url"] + f"?token={TOKEN}", timeout=10).content == (
        CORPUS / "photos" / "chelsea_cat.jpg").read_bytes()
    assert by_image[0]["key"] == cat and by_image[0]["similarity"] > 0.99
    assert len(captions) == 2 and {hit["modality"] for hit in captions} == {"text"}
    same_id = requests.post(knn, json={"text": "a photo of a cat", "modality": "image", "num_images": 1,
                                       "indice_name": "demo", "include_image": True}, timeout=60).json()
    assert same_id[0]["id"] == by_text[0]["id"]
    assert base64.b64decode(same_id[0]["image"]) == (CORPUS / "photos" / "chelsea_cat.jpg").read_bytes()
    pages = requests.post(f"{server.url}/metadata?token={TOKEN}", json={"ids": [by_text[0]["id"]],
                                                                          "indice_name": "demo"}, timeout=10).json()
    assert pages == [{"id": by_text[0]["id"], "metadata": {"caption": by_text[0]["caption"], "url": by_text[0]["url"],
                                                          "key": cat, "name": "chelsea_cat.jpg"}}]


def test_a_rebuilt_index_is_served_without_a_restart_and_no_query_fails(server: Server):
    """Four clients search in a loop while the image index is rebuilt, alternating HNSW and exact search."""
    def search() -> None:
        response = server.search(text="a photo of a cat", modality="image", k=3)
        assert response.status_code == 200 and response.json()["hits"][0]["key"] == server.key("chelsea_cat"), \
            response.text

    with looping(search, threads=4) as tally:
        for build in range(4):
            index_type = "HNSW8,Flat" if build % 2 == 0 else "Flat"
            build_indexes(IndexSettings(str(server.dataset), build=BuildSettings(index_type=index_type)))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and image_index_type(server) != index_type:
                time.sleep(0.1)
            assert image_index_type(server) == index_type
    assert tally.failures == [] and tally.runs > 0



def test_samples_ingested_embedded_and_added_with_update_are_found_without_a_restart(server: Server, tmp_path):
    more = tmp_path / "more"
    more.mkdir()
    (more / "lighthouse.txt").write_text("a tall lighthouse on a rocky coast at night")
    ingest(more, dataset=server.dataset)
    embed(server.dataset, threads=1)
    build_indexes(IndexSettings(str(server.dataset), update=True))
    hits = server.search(text="a lighthouse by the sea", modality="text", k=1).json()["hits"]
    assert hits[0]["caption"] == "a tall lighthouse on a rocky coast at night"
    assert server.http.get(server.url + hits[0]["media"]["text"], timeout=10).text == hits[0]["caption"]

def image_index_type(server: Server) -> str:
    server.search(text="anything", k=1)  # a search picks up a newly published build
    space = server.http.get(f"{server.url}/info", timeout=10).json()["datasets"][0]["spaces"][0]
    return next(index["type"] for index in space["indexes"] if index["modality"] == "image")



@pytest.mark.parametrize("what, method, path, body, headers, status, says", BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_that_says_what_was_wrong(server, what, method, path, body, headers, status, says):
    """Sent with http.client, so paths reach the server exactly as written (no client normalises '..')."""
    path = path.format(cat=server.key("chelsea_cat"), clip=server.key("conf_locked"))
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    connection.request(method, path, body=payload, headers={"Authorization": f"Bearer {TOKEN}", **headers})
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert (response.status, says in answer["error"]) == (status, True), answer


def test_a_chunked_upload_past_the_limit_is_refused(server: Server):
    """No Content-Length to refuse it by: the bytes are counted as they arrive."""
    def chunks(start: bytes):
        yield start
        for _ in range(20):
            yield b"x" * 100_000

    field = b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
    for kind, start in (("application/json", b'{"text": "'), ("multipart/form-data; boundary=b", field)):
        response = server.http.post(f"{server.url}/search", data=chunks(start), headers={"Content-Type": kind},
                                    timeout=60)
        assert response.status_code == 413 and "over the limit" in response.json()["error"], kind
    assert server.search(text="still serving", k=1).status_code == 200


@pytest.mark.parametrize("parts, status, says", MULTIPART_MISTAKES)
def test_multipart_mistakes_are_named(server: Server, parts, status, says):
    """Form fields are parts without a file name (None), files have one."""
    response = server.http.post(f"{server.url}/search", files=parts, timeout=60)
    assert response.status_code == status and says in response.json()["error"], response.text


@pytest.mark.parametrize("args, says", [
    (["--host", "0.0.0.0", "--dataset", "/nowhere"], "--token"),
    (["--host", "192.168.1.10", "--token", "short", "--dataset", "/nowhere"], "at least 8"),
    (["--dataset", "a=/x", "--dataset", "a=/y"], "its own name"),
    (["--dataset", "/no/such/dataset", "--port", "0"], "no mmindex dataset"),
    (["--host", "0.0.0.0", "--open", "--port", "0", "--dataset", "/nowhere"], "no mmindex dataset"),  # --open: past
])
def test_serve_refuses_settings_that_cannot_work(args: list[str], says: str):
    """Another address needs a token or --open; each refusal is one line and exit status 2, before any model loads."""
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output


def test_a_port_in_use_is_refused_before_anything_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--dataset", "/no/such/dataset"])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output

def test_a_browser_opens_the_page_with_the_token_once_and_keeps_it_in_a_cookie(server: Server):
    browser = requests.Session()
    assert browser.get(f"{server.url}/info", timeout=5).status_code == 401
    assert browser.get(f"{server.url}/", params={"token": TOKEN}, timeout=5).status_code == 200
    cookie = next(c for c in browser.cookies if c.name == "mmindex_token")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert browser.get(f"{server.url}/info", timeout=5).status_code == 200  # the cookie alone now


def test_only_the_origins_named_with_cors_may_call_the_api_from_their_pages(server: Server):
    from mmindex.serve.app import create_app
    from mmindex.serve.settings import ServeSettings

    front, elsewhere = "https://front.example", "https://evil.example"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    default = requests.get(f"{server.url}/indices-list", headers={"Origin": front, **server.http.headers}, timeout=5)
    assert "access-control-allow-origin" not in default.headers  # no --cors: no other page may read answers
    uvicorn_server, thread, url = running(create_app(ServeSettings(("unused",), cors_origins=(front,)), {}))
    try:
        allowed = requests.options(f"{url}/knn-service", headers={"Origin": front, **preflight}, timeout=5)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == front
        refused = requests.options(f"{url}/knn-service", headers={"Origin": elsewhere, **preflight}, timeout=5)
        assert "access-control-allow-origin" not in refused.headers
    finally:
        uvicorn_server.should_exit = True
        thread.join()


def test_a_request_that_does_not_answer_in_time_gets_503():
    """The timeout guard on a real uvicorn server, in front of an app that never answers."""
    import asyncio

    from mmindex.serve.guards import Timeout

    async def never_answers(scope, receive, send):
        if scope["type"] == "http":
            await asyncio.sleep(60)

    server, thread, url = running(Timeout(never_answers, 0.5))
    try:
        response = requests.get(f"{url}/anything", timeout=30)
        assert response.status_code == 503 and "longer than 0.5 s" in response.json()["error"]
    finally:
        server.should_exit = True
        thread.join()
