"""Drive the web demo in Debian's headless Chromium, as a person would: upload, type, submit, read the result.

Used by tests/test_webapp.py, and on its own for the README's screenshot (the app must be running):

    python tools/app.py --port 7860 &
    python tests/web_driver.py http://127.0.0.1:7860/ IMAGE "red\\ngreen\\nblue\\nyellow" docs/images/web_demo.png \\
        [--no-background]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1200")


def browser(profile: Path):
    """Selenium on the system chromium and chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def replace_text(element, text: str) -> None:
    """Select all and type (the page only sees key events, not a programmatic clear)."""
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    if text:
        element.send_keys(text)


def legend_lists(page, queries: str) -> bool:
    html = page.find_element("id", "legend").get_attribute("innerHTML")
    return all(f">{line.split(',')[0].strip()}<" in html for line in queries.splitlines() if line.strip())


def run_queries(page, url: str, image: Path, query_sets: list[str], timeout: float = 90,
                background: bool = True) -> list[str]:
    """Open the page, upload ``image``, submit each set of queries in turn; the status line after each."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page.get(url)
    wait = WebDriverWait(page, timeout)
    wait.until(lambda p: p.find_elements(By.CSS_SELECTOR, "#image input[type=file]"))
    if not background:  # open the options and untick "background"
        page.find_element(By.XPATH, "//*[normalize-space(text())='Options']").click()
        wait.until(lambda p: p.find_elements(By.CSS_SELECTOR, "#background input[type=checkbox]"))
        page.find_element(By.CSS_SELECTOR, "#background input[type=checkbox]").click()
    page.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(image))
    queries = page.find_element(By.CSS_SELECTOR, "#queries textarea")
    time.sleep(1.0)  # let the upload land before submitting
    statuses = []
    for words in query_sets:
        replace_text(queries, words)
        page.find_element(By.CSS_SELECTOR, "#submit").click()
        wait.until(lambda p, w=words: legend_lists(p, w))
        statuses.append(page.find_element(By.ID, "status").text)
    return statuses


def upload(page, image: Path, timeout: float = 30) -> None:
    """Put ``image`` into the image input, clearing the one shown first (Gradio hides its file input then)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not page.find_elements(By.CSS_SELECTOR, "#image input[type=file]"):
        clear = [b for b in page.find_elements(By.CSS_SELECTOR, "#image button")
                 if "clear" in (b.get_attribute("aria-label") or b.get_attribute("title") or "").lower()]
        assert clear, "no way to clear the image input"
        clear[0].click()
        WebDriverWait(page, timeout).until(lambda p: p.find_elements(By.CSS_SELECTOR, "#image input[type=file]"))
    page.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(image))
    time.sleep(1.0)  # let the upload land before submitting


def overlay_size(page) -> tuple[int, int] | None:
    return page.execute_script("const img = document.querySelector('#overlay img');"
                               "return img && img.complete ? [img.naturalWidth, img.naturalHeight] : null;")


def main() -> None:
    url, image, queries, screenshot = sys.argv[1], Path(sys.argv[2]), sys.argv[3].replace("\\n", "\n"), sys.argv[4]
    page = browser(Path(tempfile.mkdtemp()))
    try:
        print(run_queries(page, url, image.resolve(), [queries], background="--no-background" not in sys.argv))
        time.sleep(1.0)
        page.save_screenshot(os.fspath(screenshot))
    finally:
        page.quit()


if __name__ == "__main__":
    main()
