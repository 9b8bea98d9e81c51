"""The browser demo at `/`, in a real headless Chromium driven by Playwright.

Chromium is Debian's package (`apt-get install chromium`, done by .ci/run), so no browser is
downloaded; the tests skip only when it is missing. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import body
from tests.servers import live_server

CHROMIUM = Path(os.environ.get("GLIMPSE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TIMEOUT_MS = 90_000  # the first request on a fresh gateway traces the model
TOKEN = "demo-s3cret"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        # No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        # The browser only ever loads our own gateway on 127.0.0.1.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page; fails the test on any script error or CSP violation it logs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))

    def on_console(msg) -> None:
        # Chromium logs the API's error statuses too; some tests ask for those on purpose.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            problems.append(msg.text)

    page.on("console", on_console)
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def tiny_gateway(gateway_settings):
    with live_server(gateway_settings()) as server:
        yield server


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def open_demo(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)


def wait_done(page: Page) -> None:
    expect(page.locator("#result")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)


def predict_api(url: str, data: bytes) -> httpx.Response:
    """What the page asks for, sent straight to the API."""
    payload = body(data, num_glimpses=6, top_k=5, annotated_image=False)
    return httpx.post(f"{url}/v1/models/saccader:predict", json=payload, timeout=120)


@pytest.mark.slow
def test_real_photo_shows_the_api_class_and_every_glimpse(
    page, lite0_export, gateway_settings, sample_photos
):
    """A real ImageNet photo: the page shows what the API says, drawn at the photo's size."""
    photo = sample_photos[0]
    with live_server(gateway_settings(model_dir=lite0_export.parent.parent)) as server:
        expected = predict_api(server.url, photo.read_bytes()).json()["predictions"][0]
        open_demo(page, server.url)
        page.set_input_files("#photo", str(photo))
        wait_done(page)

        expect(page.locator("#top-class")).to_have_text(expected["top_class"]["label"])
        expect(page.locator("#overlay .glimpse")).to_have_count(6)
        expect(page.locator("#glimpse-list li")).to_have_count(6)
        expect(page.locator("#top-k-list li")).to_have_count(5)
        expect(page.locator("#error")).to_be_hidden()

        # Boxes are the API's box_original, in a coordinate system the photo's own size.
        natural = page.eval_on_selector("#photo-view", "i => [i.naturalHeight, i.naturalWidth]")
        assert natural == expected["preprocessing"]["original_size"]
        view_box = page.get_attribute("#overlay", "viewBox")
        assert view_box == f"0 0 {natural[1]} {natural[0]}"
        first = expected["glimpses"][0]["box_original"]
        rect = page.locator('#overlay .glimpse[data-order="1"] rect.box')
        assert float(rect.get_attribute("x")) == pytest.approx(first["xmin"])
        assert float(rect.get_attribute("width")) == pytest.approx(first["xmax"] - first["xmin"])
        assert page.locator("#coverage").inner_text() == f"{100 * expected['coverage']:.1f}%"
        screenshot(page, f"demo-{photo.stem}")

        # Another method beside the glimpses, or the message saying it is not there.
        page.get_by_role("button", name="Grad-CAM").click()
        shown = page.locator('figure[data-method="grad_cam"] img, #explain-error:not([hidden])')
        expect(shown).to_have_count(1, timeout=TIMEOUT_MS)
        screenshot(page, f"demo-{photo.stem}-explain")

        # Readable on a phone: nothing wider than the screen.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, f"demo-{photo.stem}-phone")


def test_page_is_served_with_security_headers(tiny_gateway):
    for path, media in [("/", "text/html"), ("/demo/demo.js", "text/javascript")]:
        r = httpx.get(tiny_gateway.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    missing = httpx.get(tiny_gateway.url + "/demo/..%2Fsettings.py")
    assert missing.status_code == 404 and "error" in missing.json()


def test_api_error_is_shown_not_swallowed(page, tiny_gateway):
    junk = b"these are notes, not a photo\n"
    message = predict_api(tiny_gateway.url, junk).json()["error"]
    open_demo(page, tiny_gateway.url)
    expect(page.get_by_label("Access token")).to_be_hidden()  # this gateway needs none
    upload(page, "notes.txt", junk, "text/plain")
    expect(page.locator("#error")).to_have_text(f"{message} (HTTP 400)")
    expect(page.locator("#result")).to_be_hidden()
    screenshot(page, "demo-error")


def test_keyboard_only(page, tiny_gateway, photo_bytes):
    """Tab reaches the file input, Space opens the file chooser, Enter asks for a method."""
    open_demo(page, tiny_gateway.url)
    reached = []
    for _ in range(6):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
        if reached[-1] == "photo":
            break
    assert reached[-1] == "photo", reached
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(
        files=[{"name": "cat.png", "mimeType": "image/png", "buffer": photo_bytes}]
    )
    wait_done(page)
    expect(page.locator("#overlay .glimpse")).to_have_count(6)

    method = page.get_by_role("button", name="Integrated gradients")
    method.focus()
    page.keyboard.press("Enter")
    explain = httpx.post(
        tiny_gateway.url + "/v1/models/saccader:explain",
        json={**body(photo_bytes), "parameters": {"method": "integrated_gradients"}},
        timeout=120,
    )
    if explain.status_code in (404, 405):  # 405: the path falls to GET /v1/models/{model}
        expect(page.locator("#explain-error")).to_contain_text("no explain API yet")
    elif explain.status_code == 200:  # the explain API is there: its picture beside the glimpses
        expect(page.locator('figure[data-method="integrated_gradients"] img')).to_have_count(1)
    else:
        expect(page.locator("#explain-error")).to_contain_text(f"HTTP {explain.status_code}")


def test_token_is_asked_for_and_used(page, gateway_settings, photo_bytes):
    with live_server(gateway_settings(auth_token=TOKEN)) as server:
        open_demo(page, server.url)
        expect(page.get_by_label("Access token")).to_be_visible()
        upload(page, "cat.png", photo_bytes, "image/png")
        expect(page.locator("#error")).to_contain_text("HTTP 401")
        page.get_by_label("Access token").fill(TOKEN)
        page.keyboard.press("Enter")
        wait_done(page)
        expect(page.locator("#error")).to_be_hidden()


def rotated_jpeg(height: int, width: int, noisy: bool = False) -> bytes:
    """A JPEG whose EXIF says "rotate 90° clockwise to display", as phones write them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (
        rng.integers(0, 256, (height, width, 3), np.uint8)
        if noisy
        else np.zeros((height, width, 3), np.uint8)
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=100, exif=exif)
    return buf.getvalue()


def upload(page: Page, name: str, data: bytes, mime: str = "image/jpeg") -> None:
    page.set_input_files("#photo", files=[{"name": name, "mimeType": mime, "buffer": data}])


def shown_aspect(page: Page) -> float:
    box = page.locator("#photo-view").bounding_box()
    return box["width"] / box["height"]


def overlay_size(page: Page) -> tuple[float, float]:
    width, height = map(float, page.get_attribute("#overlay", "viewBox").split()[2:])
    return width, height


def test_exif_rotated_photo_is_shown_as_the_model_saw_it(page, tiny_gateway):
    """The gateway ignores EXIF orientation, so the page shows the photo unrotated too."""
    open_demo(page, tiny_gateway.url)
    upload(page, "phone.jpg", rotated_jpeg(300, 400))
    wait_done(page)
    assert overlay_size(page) == (400, 300)
    assert shown_aspect(page) == pytest.approx(400 / 300, rel=0.02)


def test_photo_over_the_body_limit_is_shrunk_upright_in_the_browser(page, tiny_gateway):
    """A phone-sized photo over max_payload_bytes still gets an answer: the browser sends a
    smaller upright copy, and shows the photo upright with the boxes over it."""
    big = rotated_jpeg(1200, 1600, noisy=True)
    assert len(big) > 1_500_000
    open_demo(page, tiny_gateway.url)
    upload(page, "phone.jpg", big)
    wait_done(page)
    expect(page.locator("#converted")).to_contain_text("smaller copy")
    expect(page.locator("#overlay .glimpse")).to_have_count(6)
    width, height = overlay_size(page)
    assert width < 1200 and width / height == pytest.approx(1200 / 1600, rel=0.01)
    assert shown_aspect(page) == pytest.approx(width / height, rel=0.02)
