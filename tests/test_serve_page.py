"""The web page of `mmindex serve`, driven in a real headless Chromium against a real server on a localhost port.

One browser and one server per module; every test opens a fresh page and fails on any console error it did
not expect. Without Chromium or Playwright the tests skip, unless MMINDEX_REQUIRE_BROWSER=1 (set by CI).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import copy_dataset, embed, ingest, read_table
from mmindex.demo import CORPUS
from mmindex.index.run import IndexSettings, build_indexes

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '<img src="x" onerror="window.pwned = 1"><b>bold</b> & <script>window.pwned = 2</script>'


def find_chromium(env: Mapping[str, str]) -> tuple[str | None, str]:
    """Debian's chromium (or MMINDEX_CHROMIUM) and Playwright; else None and why. Fails instead of saying why
    when MMINDEX_REQUIRE_BROWSER=1 (CI), so a missing browser cannot pass as skipped tests."""
    path, why = None, ""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "Playwright for Python is not installed (pip install playwright)"
    else:
        path = env.get("MMINDEX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        if not path:
            why = "no chromium executable on PATH (apt-get install chromium, or set MMINDEX_CHROMIUM)"
        elif not os.access(path, os.X_OK):
            path, why = None, f"{path} is not an executable"
    if not path and env.get("MMINDEX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MMINDEX_REQUIRE_BROWSER=1 but {why}", pytrace=False)
    return path, why


# Decided when the module is collected, before the session's fixtures embed anything.
CHROMIUM, NO_BROWSER = find_chromium(os.environ)
pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM, reason=NO_BROWSER)]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dataset(offline_embedded, tmp_path_factory) -> Path:
    """The embedded demo dataset, plus one text sample that is HTML, indexed."""
    root = tmp_path_factory.mktemp("page")
    dataset = copy_dataset(offline_embedded, root)
    (root / "hostile").mkdir()
    (root / "hostile" / "hostile.txt").write_text(HOSTILE)
    ingest(root / "hostile", dataset=dataset)
    embed(dataset)
    build_indexes(IndexSettings(str(dataset)))
    return dataset


@contextlib.contextmanager
def running_server(dataset: Path) -> Iterator[str]:
    """`mmindex serve` of this checkout in its own process, on a free localhost port, until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "mmindex", "serve", "--dataset", str(dataset), "--port", str(port)]
    if os.environ.get("DEVSTUB"):
        command = [sys.executable, os.environ["DEVSTUB"], str(dataset), str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mmindex serve did not answer on {url} (exit code {server.poll()})")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def server(browser, dataset) -> Iterator[str]:
    with running_server(dataset) as url:
        yield url


@pytest.fixture(scope="module")
def keys(dataset) -> dict[str, str]:
    """Each sample's key by its source file's stem (chelsea_cat, conf_locked, ...)."""
    return {Path(row["source"]).stem: row["key"] for row in read_table(dataset / "samples")}


class Page:
    """A fresh browser page on the server that records every console error and uncaught exception."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1100, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(90_000)
        self.url = url
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, query: str = "") -> None:
        self.page.goto(self.url + "/" + query)
        self.page.wait_for_function("document.querySelector('#dataset').options.length > 0")

    def hits(self, at_least: int = 1) -> list[dict]:
        """The result cards once a search has answered: modality, key and caption each."""
        self.page.wait_for_function(
            f"document.querySelectorAll('#results .hit').length >= {at_least}"
            " && !document.querySelector('#results').hasAttribute('aria-busy')")
        return self.page.eval_on_selector_all("#results .hit", """cards => cards.map(c => ({
            modality: c.dataset.modality, key: c.dataset.key,
            caption: (c.querySelector('.snippet') || {}).textContent || null}))""")

    def images_loaded(self) -> list[dict]:
        """Every result image once it has finished loading: its natural width and alt text."""
        self.page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
        return self.page.eval_on_selector_all("#results img",
                                              "imgs => imgs.map(i => ({width: i.naturalWidth, alt: i.alt}))")

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.page.url).query)

    def drop(self, path: Path, mime: str) -> None:
        """Drops a file on the drop zone as a user dragging it from their desktop would."""
        self.page.evaluate("""([data, name, type]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type}));
            const zone = document.querySelector('#drop');
            for (const kind of ['dragenter', 'dragover', 'drop'])
                zone.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""", [base64.b64encode(path.read_bytes()).decode(), path.name, mime])


@pytest.fixture
def page(browser, server) -> Iterator[Page]:
    page = Page(browser, server)
    yield page
    page.context.close()


def test_a_typed_query_shows_its_images_with_their_captions_as_alt_text(page):
    page.open()
    page.page.fill("#q", "a photo of a cat")
    page.page.press("#q", "Enter")
    hits = page.hits()
    assert hits[0]["modality"] == "image" and "cat" in hits[0]["caption"]
    images = page.images_loaded()
    assert images and all(i["width"] > 0 for i in images), images
    assert "cat" in images[0]["alt"]
    assert page.query()["q"] == ["a photo of a cat"]
    assert page.errors == []


def test_an_audio_hit_plays(page):
    page.open("?q=this+conference+is+locked&modality=audio")
    assert page.hits()[0]["modality"] == "audio"
    player = page.page.locator("#results audio").first
    player.evaluate("a => a.play()")
    page.page.wait_for_function("a => a.currentTime > 0 && !a.error", arg=player.element_handle())
    assert player.evaluate("a => a.duration") > 1
    assert player.evaluate("a => a.seekable.length && a.seekable.end(0)") > 1, "the server's Range support lets it seek"
    assert page.errors == []


def test_a_dropped_image_is_the_query(page, keys):
    page.open("?modality=image")
    page.drop(CORPUS / "photos" / "chelsea_cat.jpg", "image/jpeg")
    hits = page.hits()
    assert hits[0]["key"] == keys["chelsea_cat"], "the photo itself is its own nearest image"
    assert page.page.locator("#parts li").inner_text().startswith("image: chelsea_cat.jpg")
    assert all(i["width"] > 0 for i in page.images_loaded())
    assert page.errors == []


def test_a_chosen_audio_file_is_the_query_and_a_hit_searches_with_its_media(page, keys):
    page.open("?modality=audio")
    page.page.set_input_files("#file", str(CORPUS / "speech" / "all_circuits_busy_now.wav"))
    assert page.hits()[0]["key"] == keys["all_circuits_busy_now"]
    page.page.get_by_role("button", name="Search with this audio").first.click()
    page.page.wait_for_url("**audio=*")
    dataset = page.page.input_value("#dataset")
    assert page.query()["audio"] == [f"/media/{dataset}/{keys['all_circuits_busy_now']}/audio"]
    assert page.hits()[0]["key"] == keys["all_circuits_busy_now"]
    assert page.errors == []


def test_a_shared_link_shows_its_results_and_back_returns_to_the_last_ones(page, keys):
    page.open("?q=a+cup+of+coffee&modality=image&k=3")
    first = page.hits(3)
    assert len(first) == 3 and {h["modality"] for h in first} == {"image"}
    assert page.page.input_value("#q") == "a cup of coffee" and page.page.input_value("#modality") == "image"
    assert page.page.input_value("#k") == "3"
    page.page.fill("#q", "a rocket")
    page.page.press("#q", "Enter")
    page.page.wait_for_url("**q=a+rocket*")
    page.hits()
    page.page.go_back()
    page.page.wait_for_function("document.querySelector('#q').value === 'a cup of coffee'")
    assert [h["key"] for h in page.hits(3)] == [h["key"] for h in first]
    assert page.errors == []


def test_weight_sliders_appear_for_a_query_of_several_parts_and_reach_the_server(page, keys):
    page.open("?modality=image")
    page.page.fill("#q", "a rocket")
    assert page.page.locator("#weights").is_hidden()
    page.drop(CORPUS / "photos" / "chelsea_cat.jpg", "image/jpeg")
    page.hits()
    assert page.page.locator("#weights input[type=range]").count() == 2
    page.page.fill("#weight-text", "0")  # the text no longer counts: the photo alone finds itself first
    page.page.press("#q", "Enter")
    page.page.wait_for_url("**w_text=0*")
    assert page.hits()[0]["key"] == keys["chelsea_cat"]
    assert page.errors == []


def test_search_by_keyboard_alone(page):
    page.open()
    keyboard = page.page.keyboard
    assert page.page.evaluate("document.activeElement.id") == "q"
    keyboard.type("a drawing of a turtle")
    keyboard.press("Enter")
    page.hits()
    focused = tab_to(page, lambda f: f["id"] == "modality")
    keyboard.press("ArrowDown")  # "images": changing the filter searches again
    page.page.wait_for_url("**modality=image*")
    assert {h["modality"] for h in page.hits()} == {"image"}
    focused = tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"].startswith("Search with this image"))
    keyboard.press("Enter")
    page.page.wait_for_url("**image=*")
    assert page.hits()[0]["key"] == focused["key"], "an image is its own nearest image"
    assert page.errors == []


def tab_to(page: Page, wanted) -> dict:
    """Presses Tab until the focused element is the one wanted, checking on the way that focus is visible."""
    for _ in range(40):
        page.page.keyboard.press("Tab")
        focused = page.page.evaluate("""() => { const e = document.activeElement;
            return {id: e.id, tag: e.tagName, text: e.textContent, outline: getComputedStyle(e).outlineStyle,
                    key: (e.closest('.hit') || {dataset: {}}).dataset.key}; }""")
        assert focused["outline"] != "none", focused
        if wanted(focused):
            return focused
    pytest.fail("not reached within 40 presses of Tab")


def test_api_errors_are_shown_as_the_servers_sentence(page, tmp_path):
    page.open()
    page.page.click("#go")
    assert "Type a text" in page.page.inner_text("#error")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    page.page.set_input_files("#file", str(broken))
    page.page.wait_for_selector("#error:not([hidden])")
    reply = page.page.request.post(page.url + "/search", multipart={
        "image": {"name": "broken.png", "mimeType": "image/png", "buffer": broken.read_bytes()}})
    assert 400 <= reply.status < 500
    assert page.page.inner_text("#error") == reply.json()["error"]
    limit = page.page.request.get(page.url + "/info").json()["limits"]["upload_bytes"]
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (limit + 1))
    searches: list[str] = []
    page.page.on("request", lambda r: r.url.endswith("/search") and searches.append(r.url))
    page.page.set_input_files("#file", str(big))
    page.page.wait_for_function("document.querySelector('#error').textContent.includes('uploads up to')")
    assert searches == [], "a file over the server's limit is refused before it is sent"
    page.open("?q=cat&image=%2Fmedia%2Fnope%2F%25E0%25A4%25A%2Fimage")  # a malformed escape in a shared link
    page.page.wait_for_function("document.querySelector('#error').textContent.startsWith('Cannot fetch')")
    assert all("status of 4" in e for e in page.errors), page.errors  # the browser logs the 4xx replies itself


def test_a_link_to_an_unknown_dataset_says_so(page):
    page.open("?q=cat&dataset=nope")
    assert "nope" in page.page.inner_text("#error")
    assert page.page.locator("#results .hit").count() == 0
    assert page.errors == []


def test_data_from_the_corpus_and_the_address_bar_is_never_run_as_html(page):
    outside: list[str] = []
    page.page.on("request", lambda r: r.url.startswith(("http:", "https:")) and not r.url.startswith(page.url)
                 and outside.append(r.url))
    page.open("?image=https%3A%2F%2Fexample.com%2Fcat.jpg&audio=javascript%3Aalert(1)")
    assert page.page.locator("#parts li").count() == 0, "media links that leave the server are ignored"
    page.page.fill("#q", HOSTILE)
    page.page.press("#q", "Enter")
    hit = page.page.locator("#results .hit", has_text="<img")
    hit.first.wait_for()
    assert hit.first.locator(".snippet").inner_text().startswith('<img src="x"')
    assert hit.first.locator(".snippet img, .snippet b, .snippet script").count() == 0
    assert page.page.evaluate("window.pwned") is None
    assert outside == []
    assert page.errors == []


def test_without_a_browser_the_page_tests_skip_saying_why_unless_one_is_required(tmp_path):
    missing = str(tmp_path / "no-chromium")
    assert find_chromium({"MMINDEX_CHROMIUM": missing}) == (None, f"{missing} is not an executable")
    with pytest.raises(pytest.fail.Exception, match=f"MMINDEX_REQUIRE_BROWSER=1 but {missing} is not an executable"):
        find_chromium({"MMINDEX_CHROMIUM": missing, "MMINDEX_REQUIRE_BROWSER": "1"})
