"""The app in a real browser: Debian's chromium, driven headless by playwright (.ci/run installs it).

A person drops an image, reads the top class, sees the Grad-CAM, moves the opacity slider, and gets
a readable message for a file that is not an image (from the page) or a broken one (from the app).
"""

import shutil
from pathlib import Path

import pytest
from app_fixtures import live_app, make_models
from PIL import Image

from skinlesion.classes import CLASSES, display_name
from skinlesion.acquire.demo_data import render_demo_image

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                       reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"),
]


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        yield page
        browser.close()


def test_upload_shows_the_top_class_and_its_grad_cam(tmp_path, browser_page):
    page = browser_page
    make_models(tmp_path / "models")
    image = tmp_path / "lesion.jpg"
    render_demo_image("nv", seed=3)[0].save(image, quality=92)
    not_an_image = tmp_path / "report.pdf"
    not_an_image.write_bytes(b"%PDF-1.4\n%%EOF\n")
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(image.read_bytes()[:4000])

    with live_app(tmp_path / "models", tmp_path / "examples") as url:
        page.goto(url)
        page.locator("#model-panel").wait_for(timeout=60_000)
        assert "not a medical device" in page.locator("body").inner_text()
        assert "efficientnet_b0" in page.locator("#model-panel").inner_text()

        page.locator("#upload input[type=file]").set_input_files(str(image))
        top = page.locator("#label [data-testid=label-output-value]")
        top.wait_for(timeout=60_000)
        assert top.inner_text().strip() in {display_name(dx) for dx in CLASSES}
        assert page.locator("#label .confidence-set").count() == 3

        cam = page.locator("#cam img")
        cam.wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('#cam img').naturalWidth > 0")
        assert cam.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [256, 256]
        assert page.locator("#cam-class input").input_value() == top.inner_text().strip()

        before = cam.get_attribute("src")
        slider = page.locator("#opacity input[type=range]")
        slider.fill("0.9")
        slider.dispatch_event("pointerup")  # what releasing the mouse sends
        page.wait_for_function("before => document.querySelector('#cam img').src !== before", arg=before,
                               timeout=30_000)

        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        assert Image.open(tmp_path / "app.png").size[0] >= 1000

        page.locator("#upload button[aria-label='Remove Image']").click()
        page.locator("#upload input[type=file]").set_input_files(str(not_an_image))
        page.get_by_text("Only image/* allowed").first.wait_for(timeout=30_000)  # refused by the page
        page.locator("#upload input[type=file]").set_input_files(str(truncated))
        page.get_by_text("The image is corrupt or truncated").first.wait_for(timeout=30_000)  # by the app
