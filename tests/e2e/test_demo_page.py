"""The demo page in a real browser: the real service, headless Chromium driven by Playwright.

Skipped, with the reason, where no Chromium or no Playwright is installed, except under CI=true
(``.ci/run`` installs Debian's chromium; the dev extra brings playwright), where it must run.
Playwright never downloads a browser here: it launches the system's Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import REPO, Server, start_default_models_server
from tests.service.photos import FRONTAL

# The README's picture; rewritten by the upload test when WINGMARK_UPDATE_SCREENSHOT=1.
SCREENSHOT = REPO / "docs" / "img" / "demo.png"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
    # A fake camera (a moving test pattern) and no permission prompt, for the webcam path.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip


def _chromium() -> str | None:
    env = os.environ.get("WINGMARK_CHROMIUM")
    if env:  # an explicit choice: that browser or none
        return env if os.access(env, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _need(reason: str) -> None:
    """Skip with ``reason``, except in CI, where a missing browser is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs chromium and the dev extra playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    exe = _chromium()
    if exe is None:
        _need("no Chromium found (apt-get install chromium, or set WINGMARK_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install -e '.[dev]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=exe, headless=True, args=CHROMIUM_FLAGS, chromium_sandbox=False,
            viewport={"width": 1000, "height": 700},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with the embedded default models (the ones ``make serve`` serves)."""
    srv = start_default_models_server(tmp_path_factory.mktemp("demo"))
    yield srv
    code = srv.stop()
    assert code in (0, -signal.SIGTERM), srv.logs()


def _poll(page: Any, expression: str, timeout_s: float) -> None:
    """Wait until ``expression`` is truthy in the page. ``page.wait_for_function`` evaluates its
    string with ``eval`` inside the page, which the demo page's Content-Security-Policy (script-src
    'self', no 'unsafe-eval') refuses; ``page.evaluate`` runs through the DevTools protocol instead."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} still false after {timeout_s} s")
        page.wait_for_timeout(100)


def _wait_done(page: Any) -> str:
    _poll(page, "['done', 'error'].includes(document.getElementById('canvas').dataset.state)", 60)
    return str(page.get_attribute("#canvas", "data-state"))


def test_root_serves_the_page_and_its_files(demo_server: Server) -> None:
    with demo_server.client() as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/static/app.js" in page.text and "<canvas" in page.text
        for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
            r = c.get(path)
            assert r.status_code == 200 and kind in r.headers["content-type"], (path, r.headers)
        assert c.get("/static/nothing.js").status_code == 404


def test_upload_draws_landmarks_pose_and_timings(
    browser: Any, demo_server: Server, photos: Path, tmp_path: Path
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo_server.url + "/")
    photo = photos / FRONTAL[0]
    page.set_input_files("#file", str(photo))
    assert _wait_done(page) == "done", page.inner_text("#error")
    assert page.get_attribute("#canvas", "data-faces") == "1"
    assert page.get_attribute("#canvas", "data-points") == "68"
    # The canvas is the photo's size and holds the drawn points: the landmark colour (#00e5ff) is there.
    size = page.evaluate("(c => [c.width, c.height])(document.getElementById('canvas'))")
    with Image.open(photo) as im:
        assert tuple(size) == im.size
    cyan = page.evaluate(
        """() => {
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 40 && d[i + 1] > 200 && d[i + 2] > 230) n++;
        return n;
        }"""
    )
    assert cyan >= 68, cyan
    timings = page.inner_text("#timings")
    for stage in ("decode", "detect", "inference", "total"):
        assert stage in timings
    assert "ms" in timings
    yaw = page.inner_text("#faces tbody tr td:nth-child(3)")
    assert yaw.replace("-", "").replace(".", "").isdigit(), yaw  # the pose was returned and shown
    assert "1 view)" in page.inner_text("#model")  # the server's views
    assert not errors, errors
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("WINGMARK_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture
        with Image.open(shot) as im:
            im.convert("RGB").quantize(256).save(SCREENSHOT, optimize=True)
    page.select_option("#views", "5")  # this request's own views
    again = tmp_path / f"again-{photo.name}"  # another file, so the input changes
    again.write_bytes(photo.read_bytes())
    page.evaluate("document.getElementById('canvas').dataset.state = 'busy'")
    page.set_input_files("#file", str(again))
    assert _wait_done(page) == "done", page.inner_text("#error")
    assert "5 views)" in page.inner_text("#model")
    page.close()


def test_api_errors_show_as_readable_messages(browser: Any, demo_server: Server, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(demo_server.url + "/")
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(b"this is not a JPEG")
    page.set_input_files("#file", str(bad))
    assert _wait_done(page) == "error"
    message = page.inner_text("#error")
    assert "HTTP 400" in message and "image" in message.lower(), message
    assert page.get_attribute("#canvas", "data-points") == "0"
    # A direct check that the message is the API's problem document, not a generic one.
    with demo_server.client() as c:
        r = c.post("/v1/landmarks", files={"image": ("x.jpg", b"this is not a JPEG", "image/jpeg")})
    assert r.json()["title"] in message
    page.close()


def test_webcam_frames_are_sent(browser: Any, demo_server: Server) -> None:
    """Chromium's fake camera (a test pattern, no face): a frame goes to the API and its answer is shown."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo_server.url + "/")
    page.click("#camera")
    _poll(page, "!document.getElementById('snap').disabled", 20)
    _poll(page, "document.getElementById('video').videoWidth > 0", 20)
    page.click("#snap")
    assert _wait_done(page) == "done", page.inner_text("#error")
    assert page.get_attribute("#canvas", "data-faces") == "0"
    assert "webcam frame" in page.inner_text("#status") and "total" in page.inner_text("#timings")
    size = page.evaluate("(c => [c.width, c.height])(document.getElementById('canvas'))")
    assert size[0] > 0 and size[1] > 0
    page.click("#camera")  # stop
    assert page.inner_text("#camera") == "Start webcam" and not errors, errors
    page.close()


def test_served_page_needs_nothing_but_the_service(demo_server: Server) -> None:
    """Every script and stylesheet the page loads comes from the service itself (no CDN)."""
    html = httpx.get(demo_server.url + "/").text
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html
