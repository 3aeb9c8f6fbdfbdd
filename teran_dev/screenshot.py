"""`python -m teran_dev.screenshot`: the search page as the README shows it.

Serves the demo collection (as `make serve` does), opens the page in Debian's headless
Chromium, searches a caption, hovers one of its words so every result shows the region that
word aligned to, and saves the picture.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from teran_dev.demo_data import DEFAULT_CHECKPOINT
from teran_dev.launcher import REPO
from teran_dev.serve import serve_demo

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def screenshot(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint folder")] = DEFAULT_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="the picture")] = REPO / "docs" / "search-page.png",
    query: Annotated[str, typer.Option(help="what to search")] = "a red circle above a blue square",
    word: Annotated[str, typer.Option(help="the query word to hover")] = "red",
) -> None:
    console = Console()
    stop = threading.Event()
    ready: list[str] = []
    server = threading.Thread(
        target=serve_demo,
        args=(checkpoint, REPO / ".cache" / "screenshot", 0, 200, console, stop, ready),
        daemon=True,
    )
    server.start()
    try:
        deadline = time.monotonic() + 300
        while not ready and server.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not ready:
            console.print("[red]the platform did not come up[/red]")
            raise typer.Exit(1)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            driver.get(ready[0] + "/")
            box = driver.find_element(By.ID, "query")
            box.send_keys(query)
            driver.find_element(By.ID, "search-button").click()
            WebDriverWait(driver, 60).until(
                lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "done"
            )
            chips = driver.find_elements(By.CSS_SELECTOR, "#words .chip")
            chip = next(c for c in chips if c.text == word)
            ActionChains(driver).move_to_element(chip).perform()
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
        console.print(f"saved {out}")
    finally:
        stop.set()
        server.join(30)


if __name__ == "__main__":
    typer.run(screenshot)
