"""``GET /``: the page to try a photo, served by the real stack on loopback (both fronts) and used in a real browser:
Debian's headless chromium driven by Playwright (.ci/run installs chromium; Playwright cannot download browsers
here, so it launches the system one). The page uploads a real photo to ``/invocations`` and shows what it answers."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import IN_CI, free_port
from tests.serving_helpers import FRONTS, local_server, post

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev requirements install it
    sync_playwright = None
MISSING = ("no chromium here (apt-get install chromium)" if CHROMIUM is None
           else "no playwright here (pip install -r requirements/dev.txt)" if sync_playwright is None else None)
WAIT_MS = 120_000  # a first answer on a busy CPU; the page sets body[data-state=done] once it shows one


@pytest.fixture(scope="module", params=FRONTS)
def server(trained, tmp_path_factory, request):
    log = tmp_path_factory.mktemp("page") / "server.log"
    with local_server(trained["archive"], free_port(), log, front=request.param) as (url, _process):
        yield url, request.param


@pytest.fixture(scope="module")
def browser():
    if MISSING:
        (pytest.fail if IN_CI else pytest.skip)(MISSING)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, server):
    """A fresh tab on the server's page, and the console errors and uncaught exceptions it logs."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    response = tab.goto(server[0] + "/")
    assert response.status == 200
    yield tab, errors
    context.close()


def a_photo(sample_dir: Path) -> Path:
    return sorted((sample_dir / "test").rglob("*.jpg"))[0]


def upload(tab, path: Path) -> None:
    tab.set_input_files("#file", str(path))
    tab.wait_for_selector("body[data-state=done]")


def test_the_page_shows_the_top_breed_the_endpoint_answers(page, server, sample_dir, tmp_path):
    tab, errors = page
    photo = a_photo(sample_dir)
    status, direct, _ = post(server[0], photo.read_bytes())
    assert status == 200, direct
    upload(tab, photo)
    breeds = tab.locator("#breeds .breed").all_text_contents()
    assert breeds and breeds[0] == direct["predictions"][0][0]["breed"]
    assert breeds == [row["breed"] for row in direct["predictions"][0][:5]]
    assert tab.locator("#error").is_hidden() and tab.locator("#result").is_visible()
    widths = tab.eval_on_selector_all("#breeds .bar", "bars => bars.map(b => b.getBoundingClientRect().width)")
    assert widths[0] > 0 and widths == sorted(widths, reverse=True)  # bars as long as the probabilities
    tab.screenshot(path=str(tmp_path / f"page-{server[1]}.png"), full_page=True)
    assert (tmp_path / f"page-{server[1]}.png").stat().st_size > 1000
    assert errors == []


def test_a_dropped_photo_is_classified(page, server, sample_dir):
    """Dropped on the page, as from a file manager: a drop event carrying the photo as a File."""
    tab, errors = page
    photo = a_photo(sample_dir)
    _status, direct, _ = post(server[0], photo.read_bytes())
    tab.evaluate("""([name, data]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
    }""", [photo.name, base64.b64encode(photo.read_bytes()).decode()])
    tab.wait_for_selector("body[data-state=done]")
    assert tab.locator("#breeds .breed").first.text_content() == direct["predictions"][0][0]["breed"]
    assert errors == []


def test_an_error_answer_is_shown_not_swallowed(page, tmp_path):
    tab, errors = page
    text = tmp_path / "not-a-photo.txt"
    text.write_text("this is not a photo\n")
    upload(tab, text)
    shown = tab.locator("#error")
    assert shown.is_visible() and "415" in shown.text_content(), shown.text_content()
    assert tab.locator("#result").is_hidden()
    # chromium's own line for the 4xx is the only console error: the page's script raised nothing
    assert all("status of 415" in line for line in errors), errors


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_verdict_and_heatmap_are_shown_and_answer_text_stays_text(page, sample_dir, tmp_path):
    """An answer with every documented key, given to the page by the browser in place of the server's (the request
    still leaves the page as it would): a breed name that is markup shows as text and runs nothing."""
    tab, errors = page
    hostile = '<img src=x onerror="document.title=\'owned\'">'
    answer = {"predictions": [[{"breed": hostile, "index": 0, "probability": 0.9},
                               {"breed": "Akita", "index": 1, "probability": 0.1}]],
              "model": "resnet18", "dog": [{"is_dog": False, "score": 0.12, "threshold": 0.42}],
              "explanations": [{"breed": hostile, "index": 0, "heatmap_png": _png()}]}
    sent = []

    def fulfil(route):
        sent.append(route.request.headers)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    tab.route("**/invocations", fulfil)
    upload(tab, a_photo(sample_dir))
    assert sent and sent[0]["x-amzn-sagemaker-custom-attributes"].startswith("explain=true")
    assert sent[0]["content-type"] == "image/jpeg" and sent[0]["accept"] == "application/json"
    assert tab.locator("#breeds .breed").all_text_contents() == [hostile, "Akita"]
    assert tab.locator("#breeds img").count() == 0 and tab.title() != "owned"
    verdict = tab.locator("#verdict")
    assert verdict.is_visible() and "does not look like a dog" in verdict.text_content()
    assert tab.eval_on_selector("#heatmap", "img => img.complete && img.naturalWidth") == 32
    assert tab.locator("#model").text_content() == "model: resnet18"
    tab.screenshot(path=str(tmp_path / "page-explained.png"), full_page=True)
    assert errors == []


def test_get_and_head_answer_the_page_with_tight_headers(server):
    import urllib.request

    with urllib.request.urlopen(server[0] + "/", timeout=30) as response:
        body, headers = response.read(), response.headers
    assert body.startswith(b"<!doctype html>") and b"/invocations" in body
    assert headers["content-type"] == "text/html; charset=utf-8" and headers["x-content-type-options"] == "nosniff"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy  # the page's own inline code, by hash; no host
    head = urllib.request.Request(server[0] + "/", method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as response:
        assert response.status == 200 and response.read() == b""
