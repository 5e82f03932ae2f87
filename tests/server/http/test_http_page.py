"""The chat page in a real headless browser (Debian's chromium and chromedriver) against the real server."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.server.harness import wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MODEL = "smollm2-135m-instruct"
# Records every text the newest reply shows, so the test sees it grow piece by piece.
RECORD = """
window.seen = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('#messages .msg.assistant .text');
  if (replies.length) window.seen.push(replies[replies.length - 1].textContent);
}).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
"""


def ensure_browser() -> None:
    """Debian's chromium and its driver; installed here on a fresh (root) machine, as `make browser` does."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium chromium-driver", shell=True,
                       check=True, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("needs Debian's chromium and chromium-driver: run `make browser` (apt-get install as root)")


@pytest.fixture(scope="module")
def browser():
    ensure_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # the system browser: nothing is downloaded
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def running(server) -> float:
    text = httpx.get(server.metrics_url, timeout=10).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "llm_requests_running")


def last_reply(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1]


def ask(driver, question: str, max_tokens: int) -> None:
    field = driver.find_element(By.ID, "max_tokens")
    field.clear()
    field.send_keys(str(max_tokens))
    driver.find_element(By.ID, "prompt").send_keys(question)
    driver.find_element(By.ID, "send").click()


def test_chat_page_streams_a_reply_and_stops_a_long_one(browser, http_server, tmp_path):
    wait = WebDriverWait(browser, 60, poll_frequency=0.05)
    browser.get(f"{http_server.http_url}/")
    wait.until(lambda d: d.find_element(By.ID, "model").text == MODEL)
    browser.execute_script(RECORD)
    browser.find_element(By.ID, "temperature").send_keys("0")  # greedy: left empty, the page samples (OpenAI's 1)

    ask(browser, "What is the capital of France?", 32)
    wait.until(lambda d: last_reply(d).get_attribute("data-state") == "done")
    reply = last_reply(browser)
    text = reply.find_element(By.CLASS_NAME, "text").text
    assert "Paris" in text
    seen = [t for t in dict.fromkeys(browser.execute_script("return window.seen")) if t]
    assert len(seen) >= 3 and all(text.startswith(t.strip()) for t in seen)  # it grew piece by piece
    assert int(reply.get_attribute("data-pieces")) >= 3
    stats = reply.find_element(By.CLASS_NAME, "stats").text
    assert "first token" in stats and "tokens/s" in stats and "finish: stop" in stats
    assert browser.find_elements(By.CSS_SELECTOR, "#messages .msg.user")[0].text == "What is the capital of France?"

    ask(browser, "Tell me a very long story about a dragon and a knight.", 512)
    wait.until(lambda d: int(last_reply(d).get_attribute("data-pieces") or 0) >= 8)
    assert running(http_server) == 1
    browser.find_element(By.ID, "stop").click()
    wait.until(lambda d: last_reply(d).get_attribute("data-state") == "stopped")
    stopped = time.monotonic()
    reply = last_reply(browser)
    assert "stopped" in reply.find_element(By.CLASS_NAME, "stats").text
    assert not browser.find_element(By.ID, "send").get_attribute("disabled")
    assert wait_until(lambda: running(http_server) == 0, timeout=10)  # the server cancelled the generation
    assert time.monotonic() - stopped < 5
    shown = reply.find_element(By.CLASS_NAME, "text").text
    time.sleep(0.5)
    assert reply.find_element(By.CLASS_NAME, "text").text == shown  # nothing more arrives

    shot = tmp_path / "chat-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
