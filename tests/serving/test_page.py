"""The serve page in a real headless Chromium (Debian's package, driven by Playwright): typing a
question and pressing Ask shows the system's answer, marked in the evidence."""

import os
import shutil

import pytest

from orqa_realm.serving.http_api import ServeConfig, make_app, serving_in_background

QUESTION = "Which NFL team represented the AFC at Super Bowl 50?"


def chromium_or_skip() -> str:
  """Debian's Chromium (apt-get install chromium); CI installs it and requires this test."""
  found = shutil.which("chromium")
  if found is None:
    if os.environ.get("ORQA_REALM_REQUIRE_BROWSER"):
      pytest.fail("chromium is not installed (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")
  return found


@pytest.fixture(scope="module")
def server_url(tiny_system):
  with serving_in_background(make_app(tiny_system, ServeConfig())) as url:
    yield url + "/"


def test_typing_a_question_shows_the_answer_and_its_evidence(tiny_system, server_url):
  executable = chromium_or_skip()
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top

  [expected] = tiny_system.answer([QUESTION], 3)
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    try:
      page = browser.new_page()
      page.goto(server_url)
      page.fill("#question", QUESTION)
      page.click("#submit")
      page.wait_for_function("document.getElementById('answer').textContent.length > 0",
                             timeout=60000)
      assert page.text_content("#answer") == expected.answer
      titles = page.locator("#evidence .title").all_text_contents()
      assert [title.split(" score ")[0] for title in titles] == [hit.title
                                                                 for hit in expected.hits]
      marks = page.locator("#evidence mark").all_text_contents()
      assert marks and set(marks) == {expected.answer}
    finally:
      browser.close()
