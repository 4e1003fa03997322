"""The web demo: its request logic on the tiny model, and the real page driven in Debian's headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tagalign.models import TagAlign, load_clip, save_checkpoint
from tagalign.visualize import text_size
from tagalign.webapp import MAX_HEATMAPS, SegmentationDemo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tiny_clip):
    torch.manual_seed(2)
    model = TagAlign(tiny_clip).eval()
    with torch.no_grad():
        for unit in model.projector.units:
            unit.gate.fill_(0.5)
    return SegmentationDemo(model)


def _image(height=120, width=200, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_a_request_segments_lists_queries_and_reuses_image_features(demo):
    image = _image()
    first = demo.run(image, "red\nblue, navy")
    assert first.overlay.shape == (120, 200, 3) and "features computed" in first.status
    assert ">red<" in first.legend and ">blue<" in first.legend
    label = text_size(200) + 8  # each row's title band
    assert first.heatmaps.shape[1] == 3 * 200 and first.heatmaps.shape[0] == 2 * (120 + label)  # rows: TagAlign, CLIP
    second = demo.run(image, "green\nsquare")
    assert "features reused" in second.status and ">green<" in second.legend
    third = demo.run(_image(seed=1), "green")
    assert "features computed" in third.status


def test_bad_requests_get_a_message(demo):
    assert "Upload an image" in demo.run(None, "red").status
    assert "at least one query" in demo.run(_image(), " \n ").status
    assert "given twice" in demo.run(_image(), "red\nred").status
    assert "at most 50" in demo.run(_image(), "\n".join(f"q{i}" for i in range(51))).status
    many = demo.run(_image(), "\n".join(f"thing {i}" for i in range(50)))
    assert many.overlay is not None and f"first {MAX_HEATMAPS} of 50" in many.status
    huge = demo.run(_image(100, 3000), "red")
    assert "downscaled from 3000x100 to 2048x68" in huge.status and huge.overlay.shape == (68, 2048, 3)
    assert "Could not segment" in demo.run(_image(3000, 4), "red").status  # too thin for one patch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """tools/app.py with ``args`` on a free port, once it answers: ``(the server process, its URL)``."""
    port = _free_port()
    env = {**os.environ, "TAGALIGN_CACHE": str(tmp_path / "cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, str(ROOT / "tools/app.py"), *args, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            assert server.poll() is None, server.stdout.read()[-3000:]
            if time.monotonic() > deadline:
                server.kill()
                raise AssertionError("the app did not start within 120 s") from None
            time.sleep(0.5)


def _require_browser() -> None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        message = "Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_the_page_in_a_real_browser(tiny_clip, tmp_path):
    _require_browser()
    import web_driver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    torch.save(tiny_clip.state_dict(), tmp_path / "clip.pt")
    model = TagAlign(load_clip("tagalign-tiny", str(tmp_path / "clip.pt")))
    save_checkpoint(model, tmp_path / "ckpt.pth")
    Image.fromarray(_image(120, 200)).save(tmp_path / "photo.png")
    server, url = _serve(["--checkpoint", str(tmp_path / "ckpt.pth")], tmp_path)
    browser = None
    try:
        browser = web_driver.browser(tmp_path / "chromium")
        query_sets = ["red square\nblue, navy", "green\nsky"]
        statuses = web_driver.run_queries(browser, url, tmp_path / "photo.png", query_sets)
        size = web_driver.overlay_size(browser)
        assert size is not None and abs(size[0] / size[1] - 200 / 120) < 0.01, size
        legend = browser.find_element(By.ID, "legend").text
        assert "green" in legend and "sky" in legend
        shot = tmp_path / "web_demo.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print("request times:", statuses)  # the second reuses the image features (issue: < half the first)
        assert "features computed" in statuses[0] and "features reused" in statuses[1]
        web_driver.replace_text(browser.find_element(By.CSS_SELECTOR, "#queries textarea"), "")
        browser.find_element(By.CSS_SELECTOR, "#submit").click()
        WebDriverWait(browser, 60).until(lambda b: "at least one query" in b.find_element(By.ID, "status").text)
        # a PNG header followed by garbage: the app's own message, no server path, and the status is this request's
        (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
        web_driver.replace_text(browser.find_element(By.CSS_SELECTOR, "#queries textarea"), "red")
        web_driver.upload(browser, tmp_path / "fake.png")
        browser.find_element(By.CSS_SELECTOR, "#submit").click()
        WebDriverWait(browser, 60).until(lambda b: "Could not read this image" in b.find_element(By.ID, "status").text)
        page = browser.find_element(By.TAG_NAME, "body").text
        assert str(tmp_path) not in page and "Could not preprocess" not in page and "/tmp/" not in page
    except Exception:
        if browser is not None:  # what the page showed, for the failure report
            browser.save_screenshot(str(tmp_path / "failure.png"))
            print("status:", browser.find_element(By.ID, "status").text, "| screenshot:", tmp_path / "failure.png")
        raise
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        print(server.communicate(timeout=30)[0][-3000:])


def test_the_page_serves_the_encoder_chosen_at_launch(tiny_clip, tmp_path):
    """tools/app.py --encoder cass --vfm-weights tiny: the page names the encoder and its second model, and a
    request segments through it (its baseline row is that encoder's untrained projector)."""
    _require_browser()
    import web_driver
    from selenium.webdriver.common.by import By

    torch.save(tiny_clip.state_dict(), tmp_path / "clip.pt")
    Image.fromarray(_image(96, 160)).save(tmp_path / "photo.png")
    server, url = _serve(["--clip", "tagalign-tiny", "--pretrained", str(tmp_path / "clip.pt"), "--encoder", "cass",
                          "--vfm-weights", "tiny"], tmp_path)
    browser = None
    try:
        browser = web_driver.browser(tmp_path / "chromium")
        statuses = web_driver.run_queries(browser, url, tmp_path / "photo.png", ["red square\nsky"])
        assert "Segmented 2 queries" in statuses[0]
        assert " ".join(browser.find_element(By.ID, "encoder").text.split()).startswith(
            "Dense encoder: cass with dino_vitb8")
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        print(server.communicate(timeout=30)[0][-3000:])
