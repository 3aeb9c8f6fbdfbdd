"""The search page in a real browser (Debian's chromium through chromedriver, headless) against
a real platform on 127.0.0.1: empty collection, a search with word chips whose hover shows the
aligned box on every result, filters, paging, an image's sentences and the images like it
(SearchSimilarImages, paged), and the readable errors (empty query, service unavailable)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from services.main import RunningApp
from services.modules import GATEWAY
from teran.data.scenes import COLOURS
from teran_client import Item, TeranClient
from tests.services.http_helpers import call, start_gateway_alone, start_platform

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PICTURES = [(f"img/{c}", c) for c in COLOURS] + [
    (f"img/{c}-2", c) for c in ("red", "green", "blue")
]
"""Ten pictures: a page of eight, then two."""


def _png(colour: tuple[int, int, int]) -> bytes:
    picture = Image.new("RGB", (120, 80), colour)
    picture.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), (10, 10, 50, 50))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def platform(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    running = start_platform(checkpoint, tmp_path_factory.mktemp("store"))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def url(platform: RunningApp) -> str:
    return str(platform.app.components[GATEWAY].url)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        pytest.fail("needs Debian's chromium and chromium-driver: bash tools/system-packages.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(driver: WebDriver, condition: Any, timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _search(driver: WebDriver, query: str, filters: str = "", top_k: str = "8") -> None:
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(query)
    driver.find_element(By.ID, "filters").clear()
    driver.find_element(By.ID, "filters").send_keys(filters)
    driver.execute_script(f"document.getElementById('top-k').value = '{top_k}'")
    _click_and_wait(driver, "search-button")


def _hits(driver: WebDriver) -> list[WebElement]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#results .hit"))


def _click_and_wait(driver: WebDriver, element_id: str) -> None:
    """Click, and wait until the page says its results are rendered."""
    driver.execute_script("document.getElementById('results').dataset.state = 'waiting'")
    driver.find_element(By.ID, element_id).click()
    _wait(driver, lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "done")


def test_an_empty_collection_and_an_empty_query_say_so(browser: WebDriver, url: str) -> None:
    browser.get(url)
    _wait(browser, lambda d: "No collection yet" in _text(d, "notice"))
    browser.find_element(By.ID, "search-button").click()
    _wait(browser, lambda d: "Type a sentence" in _text(d, "error"))
    assert not _hits(browser)


@pytest.fixture(scope="module")
def collection(platform: RunningApp) -> list[str]:
    items = [
        Item(image_id, image=_png(COLOURS[c]), payload={"colour": c, "n": i})
        for i, (image_id, c) in enumerate(PICTURES)
    ]
    with TeranClient(platform.address) as client:
        assert all(r.stored for r in client.ingest(items))
        sentences = [(f"s/{c}", f"a {c} picture with a square") for c in COLOURS]
        assert all(r.stored for r in client.ingest_sentences(sentences))
    return [s for _, s in sentences]


def test_search_chips_highlight_the_aligned_box_on_every_result(
    browser: WebDriver, url: str, collection: list[str]
) -> None:
    browser.get(url)
    _wait(browser, lambda d: "10 images" in _text(d, "stats"))
    assert not browser.find_element(By.ID, "notice").is_displayed()
    _search(browser, "a red picture with a square")
    hits = _hits(browser)
    assert len(hits) == 8
    expected = call(
        f"{url}/v1/search",
        "POST",
        {"query": "a red picture with a square", "top_k": 8, "explain": True},
    ).json()
    assert [h.get_attribute("data-id") for h in hits] == [h["id"] for h in expected["hits"]]
    chips = browser.find_elements(By.CSS_SELECTOR, "#words .chip")
    assert [c.text for c in chips] == expected["words"]
    assert not [b for b in browser.find_elements(By.CSS_SELECTOR, ".box") if b.is_displayed()]
    word = 1
    ActionChains(browser).move_to_element(chips[word]).perform()
    shown = [b for b in browser.find_elements(By.CSS_SELECTOR, ".box") if b.is_displayed()]
    assert len(shown) == len(hits)  # one box per result, on every result
    for hit, expected_hit in zip(hits, expected["hits"], strict=True):
        [box] = [b for b in hit.find_elements(By.CSS_SELECTOR, ".box") if b.is_displayed()]
        assert box.get_attribute("data-word") == str(word)
        aligned = expected_hit["alignment"][word]["box"]
        frame = hit.find_element(By.CSS_SELECTOR, ".frame").rect
        rect = box.rect
        assert abs(rect["x"] - (frame["x"] + aligned["x1"] * frame["width"])) < 2
        assert abs(rect["width"] - (aligned["x2"] - aligned["x1"]) * frame["width"]) < 2
    _wait(
        browser,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('.hit img')].every(i => i.naturalWidth > 0)"
        ),
    )
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "stats")).perform()
    assert not [b for b in browser.find_elements(By.CSS_SELECTOR, ".box") if b.is_displayed()]


def test_filters_and_paging(browser: WebDriver, url: str, collection: list[str]) -> None:
    browser.get(url)
    _search(browser, "a picture", filters="colour=purple|orange")
    found = sorted(str(h.get_attribute("data-id")) for h in _hits(browser))
    assert found == ["img/orange", "img/purple"]
    _search(browser, "a picture", filters="n=3")
    assert [h.get_attribute("data-id") for h in _hits(browser)] == ["img/yellow"]
    _search(browser, "a picture")
    first = [h.get_attribute("data-id") for h in _hits(browser)]
    assert len(first) == 8 and not browser.find_element(By.ID, "prev").is_enabled()
    _click_and_wait(browser, "next")
    second = [h.get_attribute("data-id") for h in _hits(browser)]
    assert len(second) == 2 and not set(first) & set(second)
    assert _text(browser, "page") == "page 2"
    _search(browser, "a picture", filters="colour")
    assert "filters" in _text(browser, "error")


def test_an_image_opens_its_sentences_and_images_like_it(
    browser: WebDriver, url: str, collection: list[str]
) -> None:
    browser.get(url)
    _search(browser, "a green picture")
    hit = _hits(browser)[0]
    image_id = str(hit.get_attribute("data-id"))
    hit.click()
    sentences = browser.find_element(By.ID, "sentences")
    _wait(browser, lambda d: sentences.get_attribute("data-state") == "done")
    texts = [li.text.rsplit(" ", 1)[0] for li in sentences.find_elements(By.CSS_SELECTOR, "li")]
    assert len(texts) == 5 and set(texts) <= set(collection)
    assert _text(browser, "detail-title") == image_id
    _click_and_wait(browser, "like-this")
    # images like it: SearchSimilarImages through its route, the image itself left out
    expected = call(
        f"{url}/v1/search-similar-images", "POST", {"image_id": image_id, "top_k": 8}
    ).json()
    first = [str(h.get_attribute("data-id")) for h in _hits(browser)]
    assert first == [h["id"] for h in expected["hits"]] and len(first) == 8
    assert image_id not in first
    assert _text(browser, "words") == f"Images like {image_id}"
    assert browser.find_element(By.ID, "query").get_attribute("value") == "a green picture"
    scores = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#results .hit .score")]
    assert scores[0] == f"regions {expected['hits'][0]['score']:.3f}"
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert any(name.endswith("/v1/search-similar-images") for name in requested), requested
    # its pages: ten stored, the image left out, so one more on page 2
    _click_and_wait(browser, "next")
    second = [str(h.get_attribute("data-id")) for h in _hits(browser)]
    assert len(second) == 1 and not set(second) & {image_id, *first}
    assert _text(browser, "page") == "page 2"


def test_an_unavailable_service_is_a_readable_error(browser: WebDriver) -> None:
    alone = start_gateway_alone()
    try:
        browser.get(alone.app.components[GATEWAY].url)
        _wait(browser, lambda d: "unavailable" in _text(d, "error"))
        _search(browser, "a red picture")
        assert "The search service is unavailable" in _text(browser, "error")
        assert not _hits(browser)
    finally:
        alone.stop(0)
