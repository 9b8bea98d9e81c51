"""The browser demo at `/`, in a real headless Chromium driven by Playwright.

Chromium is Debian's package (`apt-get install chromium`, done by .ci/run), so no browser is
downloaded; the tests skip only when it is missing. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser import TIMEOUT_MS
from tests.conftest import body
from tests.servers import live_server

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TOKEN = "demo-s3cret"


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


def predict_api(url: str, data: bytes, **parameters) -> httpx.Response:
    """What the page asks for, sent straight to the API."""
    parameters = {"num_glimpses": 6, "top_k": 5, "annotated_image": False, **parameters}
    if "glimpse_boxes" in parameters:
        del parameters["num_glimpses"]  # the boxes set the count
    payload = body(data, **parameters)
    return httpx.post(f"{url}/v1/models/saccader:predict", json=payload, timeout=120)


def pct(x: float) -> str:
    """A probability as the page writes it."""
    return f"{100 * x:.1f}%"


def whole_pct(x: float) -> str:
    """A fraction as the page writes it in whole percent (JavaScript's Math.round)."""
    return f"{math.floor(100 * x + 0.5)}%"


def view_boxes(prediction: dict) -> list[list[float]]:
    """A prediction's glimpses as `glimpse_boxes`: [ymin, xmin, ymax, xmax] in view pixels."""
    return [[g["box"][k] for k in ("ymin", "xmin", "ymax", "xmax")] for g in prediction["glimpses"]]


def to_view(y: float, x: float, crop: dict) -> tuple[float, float]:
    """A point in photo pixels -> view pixels, clipped to the crop like the page clips a box."""
    side_y, side_x = crop["ymax"] - crop["ymin"], crop["xmax"] - crop["xmin"]
    y = min(max(y, crop["ymin"]), crop["ymax"])
    x = min(max(x, crop["xmin"]), crop["xmax"])
    return (y - crop["ymin"]) * 224 / side_y, (x - crop["xmin"]) * 224 / side_x


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag with the mouse between two points given as (y, x) in the photo's pixels."""
    page.locator("#photo-view").scroll_into_view_if_needed()  # a click below may scroll it away
    box = page.locator("#overlay").bounding_box()
    width, height = overlay_size(page)

    def screen(point):
        y, x = point
        return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height

    page.mouse.move(*screen(start))
    page.mouse.down()
    page.mouse.move(*screen(end), steps=4)
    page.mouse.up()


def ask_own(page: Page) -> list[list[float]]:
    """Click "Ask the model" in "Try your own glimpses"; the boxes the page sent, once shown."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith(":predict")) as req:
        page.get_by_role("button", name="Ask the model").click()
    parameters = req.value.post_data_json["parameters"]
    assert "num_glimpses" not in parameters  # the boxes set the count
    expect(page.locator("#own")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    return parameters["glimpse_boxes"]


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
        expect(page.locator("#glimpse-list li").first).to_contain_text(
            f"{whole_pct(expected['glimpses'][0]['new_pixels'])} new pixels"
        )
        expect(page.locator("#result")).to_have_attribute("data-worth", "done", timeout=TIMEOUT_MS)
        screenshot(page, f"demo-{photo.stem}")

        # The model asked about its own glimpses decides from exactly those pixels: same answer.
        ask_own(page)
        expect(page.locator("#own-class")).to_have_text(expected["top_class"]["label"])

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
    expect(page.get_by_label("Model", exact=True)).to_be_hidden()  # it serves one model: no picker
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
    for attempt in range(3):  # a busy machine can drop the activation of one key press
        try:
            with page.expect_file_chooser(timeout=15_000) as chooser:
                page.keyboard.press("Space")
            break
        except PlaywrightTimeout:
            assert attempt < 2, "Space on the focused file input never opened the chooser"
            page.focus("#photo")
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


def open_with_photo(page: Page, url: str, data: bytes) -> None:
    open_demo(page, url)
    upload(page, "cat.png", data, "image/png")
    wait_done(page)
    expect(page.locator("#own")).to_be_visible()


def test_own_box_drawn_on_the_photo_is_what_the_model_is_asked_about(
    page, tiny_gateway, photo_bytes
):
    """Drag a box (partly outside the crop) on the photo, ask the model: the page sends the
    model's glimpses and the new box in view pixels, and shows the API's answer for them."""
    expected = predict_api(tiny_gateway.url, photo_bytes).json()["predictions"][0]
    crop = expected["preprocessing"]["crop_box"]
    open_with_photo(page, tiny_gateway.url, photo_bytes)
    expect(page.locator("#own-list li")).to_have_count(6)
    expect(page.get_by_role("button", name="Ask the model")).to_be_enabled()

    start, end = (60.0, crop["xmin"] - 50), (200.0, 200.0)  # (y, x) photo pixels
    drag(page, start, end)
    expect(page.locator("#own-list li")).to_have_count(7)
    expect(page.locator("#overlay .own-box")).to_have_count(7)
    expect(page.locator("#overlay .own-box").last).to_be_visible()
    expect(page.locator("#own-list li").last).to_contain_text("Your box")

    sent = ask_own(page)
    assert sent[:6] == view_boxes(expected)  # the model's own glimpses, as they came
    ymin, xmin = to_view(*start, crop)
    ymax, xmax = to_view(*end, crop)
    assert xmin == 0  # clipped to the crop
    assert sent[6] == pytest.approx([ymin, xmin, ymax, xmax], abs=1.0)

    answer = predict_api(tiny_gateway.url, photo_bytes, glimpse_boxes=sent).json()
    top = answer["predictions"][0]["top_class"]
    expect(page.locator("#own-count")).to_have_text("From these 7 boxes alone:")
    expect(page.locator("#own-class")).to_have_text(top["label"])
    expect(page.locator("#own-score")).to_have_text(pct(top["score"]))
    expect(page.locator("#own-top-k li")).to_have_count(5)
    expect(page.locator("#own-error")).to_be_hidden()
    screenshot(page, "demo-own-glimpses")

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "demo-own-glimpses-phone")

    # A new photo starts again from its own glimpses.
    upload(page, "again.png", photo_bytes, "image/png")
    wait_done(page)
    expect(page.locator("#own-list li")).to_have_count(6)
    expect(page.locator("#own-answer")).to_be_hidden()
    expect(page.locator("#overlay .own-box")).to_have_count(6)
    expect(page.locator("#overlay .own-box").first).to_be_hidden()  # the model's, drawn already


def test_glimpse_removed_with_the_keyboard_then_asked_again(page, tiny_gateway, photo_bytes):
    expected = predict_api(tiny_gateway.url, photo_bytes).json()["predictions"][0]
    model_boxes = view_boxes(expected)
    open_with_photo(page, tiny_gateway.url, photo_bytes)

    ask = page.get_by_role("button", name="Ask the model")
    ask.focus()
    with page.expect_request(lambda r: r.url.endswith(":predict")) as first:
        page.keyboard.press("Enter")
    assert first.value.post_data_json["parameters"]["glimpse_boxes"] == model_boxes
    expect(page.locator("#own")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(page.locator("#own-count")).to_have_text("From these 6 boxes alone:")

    page.get_by_role("button", name="Remove glimpse 2").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#own-list li")).to_have_count(5)
    expect(page.locator("#own-stale")).to_be_visible()  # the answer shown is for 6 boxes
    # The keyboard stays in the list: on what is now glimpse 2 (the model's third).
    assert page.evaluate("document.activeElement.textContent") == "Remove glimpse 2"
    expect(page.locator("#own-list li").nth(1)).to_contain_text("The model's glimpse 3")

    ask.focus()
    with page.expect_request(lambda r: r.url.endswith(":predict")) as second:
        page.keyboard.press("Enter")
    sent = second.value.post_data_json["parameters"]["glimpse_boxes"]
    assert sent == model_boxes[:1] + model_boxes[2:]
    expect(page.locator("#own")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    answer = predict_api(tiny_gateway.url, photo_bytes, glimpse_boxes=sent).json()
    expect(page.locator("#own-count")).to_have_text("From these 5 boxes alone:")
    expect(page.locator("#own-class")).to_have_text(answer["predictions"][0]["top_class"]["label"])
    expect(page.locator("#own-stale")).to_be_hidden()
    screenshot(page, "demo-own-glimpse-removed")


def test_each_glimpse_shows_what_it_is_worth_alone_and_without(page, tiny_gateway, photo_bytes):
    """The list and the photo's labels show the :explain `glimpses` answer, as percentages."""
    open_demo(page, tiny_gateway.url)
    with page.expect_request(lambda r: r.url.endswith(":explain")) as req:
        upload(page, "cat.png", photo_bytes, "image/png")
    parameters = req.value.post_data_json["parameters"]
    assert parameters["method"] == "glimpses" and parameters["faithfulness"] is False
    expect(page.locator("#result")).to_have_attribute("data-worth", "done", timeout=TIMEOUT_MS)

    explained = httpx.post(
        tiny_gateway.url + "/v1/models/saccader:explain",
        json={**body(photo_bytes), "parameters": parameters},
        timeout=120,
    )
    assert explained.status_code == 200, explained.text
    glimpses = explained.json()["explanations"][0]["attributions_by_label"][0]["glimpses"]
    assert len(glimpses) == 6
    for g in glimpses:
        item = page.locator(f'#glimpse-list li[data-order="{g["order"]}"]')
        expect(item.locator(".worth")).to_have_text(
            f"alone {pct(g['probability'])}, without it {pct(g['without'])}"
        )
        expect(item.locator(".where")).to_contain_text(f"{whole_pct(g['new_pixels'])} new pixels")
        label = page.locator(f'#overlay .label[data-order="{g["order"]}"]')
        assert label.locator(".number").text_content() == str(g["order"])
        assert label.locator(".worth").text_content() == pct(g["probability"])
    assert "score" not in page.locator("#glimpse-list").inner_text()
    screenshot(page, "demo-glimpse-worth")


def overlap(a: dict, b: dict) -> bool:
    """Whether two bounding boxes (x, y, width, height) share any area."""
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def svg_rect(page: Page, selector: str) -> dict:
    """An overlay rectangle's x, y, width, height in the photo's pixels (its attributes)."""
    rect = page.locator(selector)
    return {k: float(rect.get_attribute(k)) for k in ("x", "y", "width", "height")}


def on_screen(page: Page, x: float, y: float) -> tuple[float, float]:
    """A point of the photo (its pixels) -> where it is in the window."""
    box = page.locator("#overlay").bounding_box()
    width, height = overlay_size(page)
    return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height


def test_photo_is_large_and_glimpses_read_at_a_glance(page, tiny_gateway, photo_bytes):
    """In a 1280-px window the photo is drawn at least 448 px wide (it was about 250); the
    glimpses get one outline around their union, not a frame each, and their numbers sit at
    their own centres without covering each other; pointing at a glimpse, on the photo or in
    the list, shows its own frame."""
    open_demo(page, tiny_gateway.url)
    upload(page, "cat.png", photo_bytes, "image/png")
    expect(page.locator("#result")).to_have_attribute("data-worth", "done", timeout=TIMEOUT_MS)
    photo = page.locator("#photo-view").bounding_box()
    assert photo["width"] >= 448
    assert page.locator("#overlay").bounding_box() == pytest.approx(photo, abs=1)

    expect(page.locator("#overlay .union-line")).to_be_visible()
    assert page.get_attribute("#overlay .union-line", "d").startswith("M")
    frames = page.locator("#overlay .glimpse")
    expect(frames).to_have_count(6)
    for i in range(6):
        expect(frames.nth(i)).to_be_hidden()  # no grid of frames

    labels = page.locator("#overlay .label")
    expect(labels).to_have_count(6)
    shown = [labels.nth(i).bounding_box() for i in range(6)]
    for i, a in enumerate(shown):
        assert a["width"] > 0 and not any(overlap(a, b) for b in shown[i + 1 :]), shown
    for order in range(1, 7):
        box = svg_rect(page, f'#overlay .glimpse[data-order="{order}"] rect.box')
        badge = svg_rect(page, f'#overlay .label[data-order="{order}"] rect')
        centre = (badge["x"] + badge["width"] / 2, badge["y"] + badge["height"] / 2)
        assert box["x"] <= centre[0] <= box["x"] + box["width"], order
        assert box["y"] <= centre[1] <= box["y"] + box["height"], order
    screenshot(page, "demo-glimpses-at-a-glance")

    # The pointer on glimpse 2's centre: its frame, its number and its line are marked.
    box = svg_rect(page, '#overlay .glimpse[data-order="2"] rect.box')
    page.mouse.move(*on_screen(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2))
    expect(page.locator('#overlay .glimpse[data-order="2"]')).to_be_visible()
    expect(page.locator("#overlay .glimpse.active")).to_have_count(1)
    expect(page.locator('#overlay .label[data-order="2"]')).to_have_class("label active")
    expect(page.locator('#glimpse-list li[data-order="2"]')).to_have_class("active")
    screenshot(page, "demo-glimpse-pointed-at")
    page.mouse.move(5, 5)  # off the photo: no frame
    expect(page.locator("#overlay .glimpse.active")).to_have_count(0)
    page.locator('#glimpse-list li[data-order="4"]').hover()
    expect(page.locator('#overlay .glimpse[data-order="4"]')).to_be_visible()
    expect(page.locator("#overlay .glimpse.active")).to_have_count(1)


def test_custom_labels_are_shown_as_the_model_names_them(page, tiny_gateway, photo_bytes):
    """A model trained on a user's labels answers "dog" with no synset: the page shows the
    label as it comes, with no empty brackets, wherever it names a class."""

    def relabel(c: dict, label: str) -> None:
        c.update(label=label, synset="")

    def custom(route) -> None:
        answer = route.fetch().json()
        prediction = answer["predictions"][0]
        relabel(prediction["top_class"], "dog")
        relabel(prediction["full_image"], "vehicle")
        for i, c in enumerate(prediction["top_k"]):
            relabel(c, "dog" if i == 0 else f"label {i}")
        route.fulfill(json=answer)

    page.route("**/*:predict", custom)
    open_with_photo(page, tiny_gateway.url, photo_bytes)
    expect(page.locator("#top-class")).to_have_text("dog")
    expect(page.locator("#full-image")).to_contain_text("vehicle (")
    expect(page.locator("#top-k-list li").first).to_contain_text("dog ")
    expect(page.locator("#status")).to_contain_text("dog, ")
    ask_own(page)
    expect(page.locator("#own-class")).to_have_text("dog")
    assert "()" not in page.locator("#result").inner_text()


def test_failed_worth_is_a_note_and_the_page_still_works(page, tiny_gateway, photo_bytes):
    page.route(
        "**/*:explain",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"error": "explainer is busy"}'
        ),
    )
    open_with_photo(page, tiny_gateway.url, photo_bytes)
    expect(page.locator("#result")).to_have_attribute("data-worth", "error", timeout=TIMEOUT_MS)
    expect(page.locator("#worth-note")).to_contain_text("explainer is busy (HTTP 503)")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#glimpse-list li")).to_have_count(6)
    expect(page.locator("#glimpse-list .worth")).to_have_count(0)
    ask_own(page)  # the rest of the page carries on


def test_more_than_16_boxes_is_prevented_and_a_refusal_is_shown(page, tiny_gateway, photo_bytes):
    expected = predict_api(tiny_gateway.url, photo_bytes).json()["predictions"][0]
    crop = expected["preprocessing"]["crop_box"]
    open_with_photo(page, tiny_gateway.url, photo_bytes)
    status = page.locator("#own-status")

    # 6 of the model's, then 10 drawn: 16, the most. A 17th is refused, and the page says so.
    for i in range(11):
        y = crop["ymin"] + 10 + 20 * (i % 2)
        x = crop["xmin"] + 10 + 20 * i
        drag(page, (y, x), (y + 15, x + 15))
    expect(page.locator("#own-list li")).to_have_count(16)
    expect(page.locator("#overlay .own-box")).to_have_count(16)
    expect(page.locator("#overlay .own-draft")).to_have_count(0)
    expect(status).to_contain_text("16 boxes is the most")

    # Smaller than a view pixel (a click), or outside the crop: ignored, with a hint.
    page.get_by_role("button", name="Remove glimpse 16").click()
    drag(page, (100.0, 200.0), (100.0, 200.0))
    drag(page, (5.0, 5.0), (10.0, 60.0))
    expect(page.locator("#own-list li")).to_have_count(15)
    expect(status).to_contain_text("Drag across the photo")

    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#own-list li")).to_have_count(0)
    expect(page.get_by_role("button", name="Ask the model")).to_be_disabled()
    expect(page.locator("#own-empty")).to_be_visible()
    screenshot(page, "demo-own-cleared")

    # What the gateway refuses is shown with its status and message, like the page's errors.
    boxes = [[10, 10, 40, 40]] * 17
    message = predict_api(tiny_gateway.url, photo_bytes, glimpse_boxes=boxes).json()["error"]

    def seventeen(route) -> None:
        sent = route.request.post_data_json
        sent["parameters"]["glimpse_boxes"] = boxes
        route.continue_(post_data=json.dumps(sent))

    page.route("**/*:predict", seventeen)
    drag(page, (100.0, 150.0), (150.0, 200.0))
    page.get_by_role("button", name="Ask the model").click()
    expect(page.locator("#own-error")).to_have_text(f"{message} (HTTP 400)", timeout=TIMEOUT_MS)
    expect(page.locator("#own")).to_have_attribute("data-state", "error")
    expect(page.locator("#own-answer")).to_be_hidden()
    screenshot(page, "demo-own-refused")


def test_the_model_picker_asks_the_model_picked(page, gateway_settings, tiny_export, tmp_path):
    """With several models served the page offers them, the default chosen, and asks the one
    picked (with one, it shows no picker: test_api_error_is_shown_not_swallowed)."""
    for name in ("saccader", "parts"):  # one export under two names, loaded once
        (tmp_path / name).mkdir()
        (tmp_path / name / "1").symlink_to(tiny_export, target_is_directory=True)
    with live_server(gateway_settings(model_dir=tmp_path)) as server:
        open_demo(page, server.url)
        picker = page.get_by_label("Model", exact=True)
        expect(picker).to_have_value("saccader")
        assert page.locator("#model option").all_inner_texts() == ["parts", "saccader"]
        upload(page, "grey.png", _png(), "image/png")
        wait_done(page)
        with page.expect_request(lambda r: r.url.endswith(":predict")) as asked:
            picker.select_option("parts")
        assert asked.value.url == f"{server.url}/v1/models/parts:predict"
        wait_done(page)


def _png() -> bytes:
    from tests.conftest import encode

    return encode(np.full((120, 160, 3), 90, np.uint8))
