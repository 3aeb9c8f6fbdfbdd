"""The demo's measurements against a real single-process server serving the shipped demo model:
held-out captions, the rank of the image each was written for, R@1, and the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from services.config import load_settings
from services.main import RunningApp, start
from teran.data.synthetic import SyntheticScenes
from teran_client import TeranClient
from teran_dev.demo import PHOTO_NOTE, held_out_ranks, run_query
from teran_dev.demo_data import demo_data, held_out_queries
from teran_dev.report import HeldOutRanks, print_ranks, write_report

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "teran-synthetic-tiny"
SCENES = 24


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeranClient]:
    root = tmp_path_factory.mktemp("demo")
    settings = load_settings(
        None,
        common={"model": {"checkpoint": str(DEMO_MODEL)}, "store": {"path": str(root / "store")}},
        server={"grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 1},
    )
    running: RunningApp = start(settings)
    try:
        with TeranClient(running.address, timeout_s=60) as c:
            c.wait_ready(30)
            data = demo_data(SCENES, Console(quiet=True))
            assert all(r.stored for r in c.ingest(data.items))
            yield c
    finally:
        running.stop(0)


def test_held_out_queries_are_distinctive_captions_of_their_scenes() -> None:
    queries = held_out_queries(SCENES, 12)
    scenes = SyntheticScenes(SCENES, split="test", seed=7)
    assert len(queries) == 12 and len({t for _, t in queries}) == 12
    for caption, target in queries:
        index = int(target.rsplit("-", 1)[1])
        assert caption in scenes.distinctive_captions(index)


def test_ranks_recall_and_median_count_misses_as_below_100() -> None:
    ranks = HeldOutRanks([("a", "x"), ("b", "y"), ("c", "z"), ("d", "w")], [1, 3, None, 1])
    assert ranks.recall(1) == 0.5 and ranks.recall(5) == 0.75
    assert ranks.median() == 2.0
    assert "R@1 50.0%" in ranks.summary() and "4 held-out captions" in ranks.summary()


def test_demo_prints_the_rank_of_every_caption_and_r_at_1(client: TeranClient) -> None:
    queries = held_out_queries(SCENES, 12)
    ranks = held_out_ranks(client, queries)
    assert all(r is not None and 1 <= r <= SCENES for r in ranks.ranks), ranks.ranks
    # the shipped model finds most of its held-out captions' images first (chance: 1 in 24)
    assert ranks.recall(1) >= 0.5, ranks.ranks
    console = Console(record=True, width=200)
    print_ranks(console, ranks)
    text = console.export_text()
    for (caption, _), rank in zip(queries, ranks.ranks, strict=True):
        line = next(line for line in text.splitlines() if caption in line)
        assert f"#{rank}" in line
    assert ranks.summary() in text


def test_report_lists_ranks_and_says_photos_are_not_searched(
    client: TeranClient, tmp_path: Path
) -> None:
    queries = held_out_queries(SCENES, 4)
    ranks = held_out_ranks(client, queries)
    caption, target = queries[0]
    run = run_query(client, caption, 3, {"source": "synthetic"}, target=target)
    assert run.target_rank == ranks.ranks[0]
    assert all(h.payload["source"] == "synthetic" for h in run.result.hits)
    # scores a person can read: the mean over words is a cosine
    assert all(-1.0 <= h.score / run.words <= 1.0 for h in run.result.hits)
    report = write_report(
        tmp_path / "report.html", [run], {}, notes=[PHOTO_NOTE], ranks=ranks
    ).read_text()
    assert ranks.summary() in report and "trained on synthetic scenes" in report
    assert "mean cosine" in report
