"""`make serve` end to end: the Makefile's command (teran_dev.serve) as a child process on free
loopback ports with a temporary work dir and a few scenes; its printed URL serves the search
page, the gateway's JSON route searches the ingested demo collection with alignment boxes, and
SIGINT stops it cleanly. Offline: the Hugging Face libraries may not download, and any other
HTTP(S) request goes to a proxy that is not there."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.http_helpers import call

REPO = Path(__file__).resolve().parents[2]
SCENES = 8
START_TIMEOUT_S = 180.0
URL_LINE = re.compile(r"search page: (http://127\.0\.0\.1:\d+)/")
QUERY = "a red circle above a blue square"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def make_serve_command() -> list[str]:
    """What `make serve SERVE_PORT=0` runs (make -n: printed, not run; the venv stamp is taken
    as up to date so nothing is installed), with this interpreter."""
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "serve",
         f"PY={sys.executable}", "SERVE_PORT=0"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    (line,) = out.strip().splitlines()
    command = shlex.split(line)
    assert command[:3] == [sys.executable, "-m", "teran_dev.serve"], command
    assert "--port" in command and command[command.index("--port") + 1] == "0"
    return command


class Served:
    """The child process, its output (read on a thread so the pipe never fills) and its URL."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._urls: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = URL_LINE.search(line)
            if found:
                self._urls.put(found.group(1))

    def output(self) -> str:
        return "".join(self.lines)

    def url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._urls.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        pytest.fail(f"no search page URL (exit {self.proc.poll()}):\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERAN_")}
    env.update(OFFLINE, COLUMNS="200")
    command = [*make_serve_command(), "--workdir", str(tmp_path / "serve"), "--images", str(SCENES)]
    served = Served(command, env)
    try:
        yield served
    finally:
        served.stop(signal.SIGKILL, timeout=10)


@pytest.mark.slow
def test_make_serve_serves_the_page_and_searches_the_demo(served: Served, tmp_path: Path) -> None:
    url = served.url(START_TIMEOUT_S)
    page = call(f"{url}/")
    assert page.status == 200 and page.content_type.startswith("text/html")
    html = page.body.decode()
    assert 'id="query"' in html and 'type="search"' in html  # the search box
    assert call(f"{url}/readyz").json() == {"serving": True}

    answer = call(f"{url}/v1/search", "POST", {"query": QUERY, "top_k": 5, "explain": True})
    assert answer.status == 200, answer.body
    found = answer.json()
    assert found["model_version"] and found["words"]
    hits = found["hits"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted(
        (h["score"] for h in hits), reverse=True
    )
    for hit in hits:
        assert hit["alignment"], hit["id"]
        for word in hit["alignment"]:
            box = word["box"]
            assert word["word"] in found["words"]
            assert 0 <= box.get("x1", 0) <= box["x2"] and 0 <= box.get("y1", 0) <= box["y2"], word
    # the demo's synthetic scenes and their captions are in (an image opens its sentences)
    stats = call(f"{url}/v1/stats").json()
    assert int(stats["sentences"]) == SCENES and int(stats["images"]) >= SCENES

    assert served.stop(signal.SIGINT) == 0, served.output()
    assert (tmp_path / "serve" / "config.yaml").is_file()  # the temporary work dir, not .cache/
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/healthz", timeout=5)
