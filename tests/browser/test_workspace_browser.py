"""The editors' workspace in a real headless Chromium against a real uvicorn and a real bundle.

The tests run in file order and share one service (its store lives in a temp folder): paste the
sample seed, ingest it, correct a topic, restart the service, review. After each test the
`browser` fixture fails it on any console error or any request that left 127.0.0.1.
Screenshots of every view go to tests/screenshots/ (ignored by git).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT, SAMPLE_SEED

from browser.conftest import start_live_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHOTS = ROOT / "tests" / "screenshots"
ADMIN = "browser-admin-token-0123456789"
MORE = [
    {
        "title": "NASA probe reaches an asteroid after a six-year journey",
        "excerpt": "The spacecraft will map the asteroid's surface and collect samples, NASA said.",
        "publishedDateTime": "2024-03-06T12:00:00Z",
        "webUrl": "https://spacedaily.example/nasa-probe-asteroid",
        "provider": {"name": "Space Daily", "domain": "spacedaily.example"},
    },
    {
        "title": "Council publishes the minutes of Tuesday's meeting",
        "excerpt": "The minutes cover parking permits and the opening hours of the library.",
        "publishedDateTime": "2024-03-08T09:00:00Z",
        "webUrl": "https://towncrier.example/minutes",
        "provider": {"name": "Town Crier", "domain": "towncrier.example"},
    },
]


class Service:
    """The service under test; `restart` stops it and starts it again on the same store."""

    def __init__(self, bundle: Path, data_dir: Path, log_dir: Path) -> None:
        self.env = {
            "NEWSDESK_BUNDLE": str(bundle),
            "NEWSDESK_DATA_DIR": str(data_dir),
            "NEWSDESK_ADMIN_TOKEN": ADMIN,
            "NEWSDESK_LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        self.log_dir = log_dir
        self.server = self._start()

    def _start(self):
        # /readyz answers 200 once the bundle and the stored articles are loaded.
        return start_live_server(
            "service.main:app",
            self.env,
            cwd=ROOT,
            log_dir=self.log_dir,
            health_path="/readyz",
            startup_timeout=180,
        )

    @property
    def url(self) -> str:
        return self.server.url

    def restart(self) -> None:
        self.server.stop()
        self.server = self._start()

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=60) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def service(small_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace_browser")
    running = Service(small_bundle, root / "store", root)
    yield running
    running.server.stop()


@pytest.fixture
def page(browser, service):
    browser.base_url = service.url
    return browser


def shot(browser, name: str) -> None:
    """A desktop (1280x800) and a phone (390x844) screenshot of the current view."""
    browser.screenshot(f"{name}-desktop", 1280, 800, directory=SHOTS)
    browser.screenshot(f"{name}-phone", 390, 844, mobile=True, directory=SHOTS)


def texts(browser, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text.strip() for element in browser.driver.find_elements(By.CSS_SELECTOR, css)]


def effective(browser) -> list[str]:
    return texts(browser, "#effective-topics .chip:not(.chip-removed)")


def test_pasting_the_sample_seed_shows_its_topics_and_related_coverage(page, service):
    page.open("/")
    shot(page, "tag-empty")
    # A paste: the whole seed file lands in the textarea at once.
    page.driver.execute_script(
        "document.getElementById('seed').value = arguments[0];", SAMPLE_SEED.read_text(encoding="utf-8")
    )
    page.find("#analyse").click()
    page.wait_for_text("#result-title", "Amazon Suspends Police Use")
    chosen = page.find("#chosen-topics").text
    assert {"AI", "AWS AI", "Computer Vision"} & set(chosen.split(", ")), chosen
    bars = texts(page, "#topics .bar.is-chosen .bar-label")
    assert bars and set(bars) <= set(chosen.split(", "))
    assert len(texts(page, "#seed-related li")) == 3
    coverage = " ".join(texts(page, "#coverage li"))
    # The bundle was trained on this seed: its related reports come back as coverage.
    assert any(
        t in coverage for t in ("Celebrity spotting", "Scottish local authority", "facial recognition")
    ), coverage
    assert page.find("#scores").text.lower().count("interval") >= 1
    shot(page, "tag-result")
    page.find("#ingest").click()
    page.wait_for_text("#flash", "Ingested")
    assert page.find("#article-title").text.startswith("Amazon Suspends")
    assert len(texts(page, "#related li")) == 3  # ingest kept the seed's related items


def test_a_corrected_topic_survives_a_reload_and_a_service_restart(page, service):
    [row] = [
        r for r in service.api("GET", "/v1/articles?limit=50")["items"] if r["title"].startswith("Amazon Sus")
    ]
    page.open(f"/article/{row['id']}")
    before = effective(page)
    assert before, "the model chose no topic for the sample seed"
    removed = before[0]
    page.find(f"#correct-form input[name=topic][value='{removed}']").click()
    page.find("#new_topics").send_keys("Privacy")
    page.find("#editor").send_keys("maria")
    page.find("#save").click()
    page.wait_for_text("#flash", "Saved")
    expected = [*(label for label in before if label != removed), "Privacy"]
    assert effective(page) == expected
    assert removed in texts(page, "#effective-topics .chip-removed")
    assert "maria" in page.find("#history").text
    shot(page, "correct")
    page.driver.refresh()
    assert effective(page) == expected
    assert page.find("#editor").get_attribute("value") == "maria"  # remembered for the next answer
    service.restart()
    page.base_url = service.url
    page.open(f"/article/{row['id']}")
    assert effective(page) == expected
    assert "maria" in page.find("#history").text


def test_the_review_queue_puts_the_least_sure_article_first(page, service):
    for article in MORE:
        service.api("POST", "/v1/articles", article)
    queue = service.api("GET", "/v1/review?limit=50")["items"]
    keys = [(bool(i["labels"]), i["uncertainty"]) for i in queue]
    assert keys == sorted(keys)  # no label first, then the smallest margin to a threshold
    page.open("/review")
    links = page.driver.find_elements("css selector", "#queue li .queue-main a")
    assert [link.get_attribute("href").rsplit("/", 1)[1] for link in links] == [i["id"] for i in queue]
    assert all(not i["title"].startswith("Amazon Sus") for i in queue)  # corrected: reviewed already
    shot(page, "review")
    # Keyboard: j selects and focuses the first row, / jumps to search.
    page.press("j")
    assert "is-selected" in page.driver.find_elements("css selector", "#queue li")[0].get_attribute("class")
    assert page.driver.switch_to.active_element.get_attribute("href") == links[0].get_attribute("href")
    page.press("/")
    assert page.focused_id() == "q"


def test_the_inbox_filters_and_the_story_view(page, service):
    page.open("/inbox")
    rows = texts(page, "#inbox tbody tr")
    assert len(rows) >= 6 and "Council publishes" in rows[0]  # newest first
    shot(page, "inbox")
    page.press("/")
    assert page.focused_id() == "f-q"
    page.press("asteroid\n")
    page.wait_for_text("#inbox", "NASA probe")
    assert len(texts(page, "#inbox tbody tr")) == 1
    page.open("/inbox?q=nothing-like-this")
    assert "No article matches" in page.find("main").text
    [row] = [
        r for r in service.api("GET", "/v1/articles?limit=50")["items"] if r["title"].startswith("Amazon Sus")
    ]
    page.open(f"/story/{row['story_id']}")
    assert "Amazon Suspends" in page.find("#timeline").text
    assert page.find("#first").text
    shot(page, "story")


def test_right_to_left_articles_display_right_to_left(page, service):
    arabic = {
        "title": "الحكومة تعلن عن خطة جديدة لدعم الطاقة المتجددة في البلاد",
        "excerpt": "قالت الوزارة إن الخطة تشمل محطات رياح وشمس في ثلاث مناطق.",
        "webUrl": "https://arabic-news.example/energy-plan",
    }
    article_id = service.api("POST", "/v1/articles", arabic)["id"]
    page.open(f"/article/{article_id}")
    direction = "return getComputedStyle(document.querySelector(arguments[0])).direction"
    assert page.driver.execute_script(direction, "#article-title") == "rtl"
    assert page.driver.execute_script(direction, ".excerpt") == "rtl"
    assert page.find("#article-language").text == "ar"
    shot(page, "article-rtl")
    page.open("/inbox?language=ar")
    [row] = texts(page, "#inbox tbody tr")
    assert arabic["title"] in row
    assert page.driver.execute_script(direction, "#inbox tbody a") == "rtl"
    assert page.driver.execute_script(direction, "#inbox th") == "ltr"  # the page itself stays as it is


def test_no_page_asks_another_host_for_anything(page, service):
    for path in ("/", "/inbox", "/review"):
        page.open(path)
    page.assert_only_local_requests()
    requested = {r.url.split("?")[0].replace(service.url, "") for r in page.requests()}
    assert {"/static/app.css", "/static/app.js"} <= requested
    page.assert_no_console_errors()
