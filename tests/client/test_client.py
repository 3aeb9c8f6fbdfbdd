"""The client library, its CLI and the demo's report against a real single-process server.

One server (every service, embedded store, in-process inference on an untrained tiny model)
serves the module; tests use their own ids and payload keys so they do not depend on order.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from services.config import load_settings
from services.main import RunningApp, start
from teran import SentenceTokenizer, Teran
from teran.checkpoint import save_checkpoint
from teran.data.synthetic import SyntheticScenes
from teran_client import Item, TeranClient, TeranError
from teran_client.cli import app as cli_app
from teran_client.cli import parse_value
from teran_dev.report import QueryRun, annotate, write_report

SCENES = SyntheticScenes(12, split="test", seed=3)
BOX_EPS = 0.0
"""float32 rounding: teran.regions.grid_boxes gives the last grid cell x2 = 1 + 1.2e-7."""


def png(index: int) -> bytes:
    out = io.BytesIO()
    SCENES.image(index).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_minilm: tuple[Teran, SentenceTokenizer]
) -> Iterator[RunningApp]:
    root = tmp_path_factory.mktemp("client")
    model, tokenizer = tiny_minilm
    save_checkpoint(model, tokenizer, root / "ck", bundled_backbone=True)
    settings = load_settings(
        None,
        common={"model": {"checkpoint": str(root / "ck")}, "store": {"path": str(root / "store")}},
        server={"grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 1},
    )
    running = start(settings)
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def client(server: RunningApp) -> Iterator[TeranClient]:
    with TeranClient(server.address, timeout_s=30) as c:
        c.wait_ready(30)
        yield c


@pytest.fixture(scope="module")
def base(client: TeranClient) -> list[str]:
    """Six synthetic scenes stored under `base/`, half with group=a, half group=b."""
    items = [
        Item(f"base/{i}", image=png(i), payload={"group": "ab"[i % 2], "n": i}) for i in range(6)
    ]
    results = list(client.ingest(items))
    assert all(r.stored for r in results), results
    return [r.id for r in results]


def test_ingest_bad_items_fail_alone_in_order(client: TeranClient) -> None:
    before = client.stats().images
    items = [
        Item("mix/0", image=png(0), uri="s3://bucket/0.png", payload={"k": "mix"}),
        Item("mix/bad", image=b"definitely not an image"),
        Item("mix/none"),  # no source: refused before sending
        Item("mix/missing", path=Path("/nonexistent/pic.png")),
        Item("mix/1", image=png(1)),
        Item("mix/2", regions=(np.ones((3, 5), np.float32), np.array([[0, 0, 1, 1]] * 3))),
        Item("mix/3", image=png(2)),
    ]
    results = list(client.ingest(items, window=2))
    assert [r.id for r in results] == [i.id for i in items]
    assert [r.stored for r in results] == [True, False, False, False, True, False, True]
    bad = results[1]
    assert bad.status == "INVALID_ARGUMENT" and ".image" in bad.message
    assert "cannot decode" in bad.message
    assert results[2].status == "INVALID_ARGUMENT" and "exactly one" in results[2].message
    assert results[3].status == "NOT_FOUND"
    # the model reads pictures: 5 values per region is refused by the server, naming the field
    assert results[5].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "regions.features" in results[5].message
    assert results[0].regions == 49  # 7 x 7 grid cells
    assert client.stats().images == before + 3


def test_ingest_keeps_at_most_window_items_in_flight(client: TeranClient) -> None:
    pulled = 0
    images = [png(i) for i in range(8)]

    def items() -> Iterator[Item]:
        nonlocal pulled
        for i, data in enumerate(images):
            pulled += 1
            yield Item(f"window/{i}", image=data)

    window = 2
    acknowledged = 0
    for result in client.ingest(items(), window=window):
        assert result.stored
        # one more may be read from the iterable while it waits for a free slot
        assert pulled - acknowledged <= window + 1
        acknowledged += 1
    assert acknowledged == 8
    with pytest.raises(ValueError, match="window"):
        next(client.ingest([], window=0))


def test_search_explain_alignment_matches_words(client: TeranClient, base: list[str]) -> None:
    result = client.search("a red circle to the left of a blue square", top_k=5, explain=True)
    assert result.words[:3] == ["a", "red", "circle"]
    assert result.model_version
    assert 1 <= len(result.hits) <= 5
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    for hit in result.hits:
        assert [a.word for a in hit.alignment] == result.words
        for a in hit.alignment:
            assert 0 <= a.box.x1 < a.box.x2 <= 1 + BOX_EPS
            assert 0 <= a.box.y1 < a.box.y2 <= 1 + BOX_EPS
            assert 0 <= a.region < 49
            assert -1.0 <= a.similarity <= 1.0
        # MrSw: the score is the sum of the words' best similarities
        assert hit.score == pytest.approx(sum(a.similarity for a in hit.alignment), abs=1e-3)
    plain = client.search("a red circle to the left of a blue square", top_k=5)
    assert all(h.alignment == [] for h in plain.hits)
    assert [h.id for h in plain.hits] == [h.id for h in result.hits]


def test_search_filters_and_paging(client: TeranClient, base: list[str]) -> None:
    only_a = client.search("a shape.", top_k=20, filter={"group": "a"})
    assert {h.id for h in only_a.hits} == {"base/0", "base/2", "base/4"}
    assert all(h.payload["group"] == "a" for h in only_a.hits)
    either = client.search("a shape.", top_k=20, filter={"group": ["a", "b"], "n": [1, 4]})
    assert {h.id for h in either.hits} == {"base/1", "base/4"}
    assert client.search("a shape.", filter={"group": "zzz"}).hits == []
    first = client.search("a shape.", top_k=2, filter={"group": ["a", "b"]})
    second = client.search("a shape.", top_k=2, offset=2, filter={"group": ["a", "b"]})
    assert len(first.hits) == len(second.hits) == 2
    assert not {h.id for h in first.hits} & {h.id for h in second.hits}


def test_errors_carry_code_and_server_message(client: TeranClient) -> None:
    with pytest.raises(TeranError) as err:
        client.search("   ")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "query" in err.value.message
    with pytest.raises(TeranError) as err:
        client.search("a cat", top_k=1000)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in err.value.message
    with pytest.raises(TeranError) as err:
        client.search_sentences(image_id="no/such/image")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_delete_not_found_and_stats(client: TeranClient) -> None:
    results = list(client.ingest([Item(f"del/{i}", image=png(i)) for i in range(2)]))
    assert all(r.stored for r in results)
    before = client.stats()
    deleted = client.delete(image_ids=["del/0", "del/unknown"])
    assert deleted.deleted == 1 and deleted.not_found == ["del/unknown"]
    after = client.stats()
    assert after.images == before.images - 1
    assert after.model_version == before.model_version and after.image_collection
    hits = client.search("a shape.", top_k=100).hits
    assert "del/0" not in {h.id for h in hits} and "del/1" in {h.id for h in hits}


def test_sentences_round_trip(client: TeranClient, base: list[str]) -> None:
    before = client.stats().sentences
    texts = SCENES.captions(0)[:3]
    results = client.ingest_sentences(
        [("sent/0", texts[0], {"lang": "en"}), ("sent/bad", ""), ("sent/1", texts[1]),
         ("sent/2", texts[2])]
    )  # fmt: skip
    assert [r.id for r in results] == ["sent/0", "sent/bad", "sent/1", "sent/2"]
    assert [r.stored for r in results] == [True, False, True, True]
    assert results[1].status == "INVALID_ARGUMENT" and "sentences[1]" in results[1].message
    assert client.stats().sentences == before + 3
    by_id = client.search_sentences(image_id="base/0", top_k=3)
    by_bytes = client.search_sentences(image=png(0), top_k=3, filter={"lang": "en"})
    assert {h.id for h in by_id.hits} <= {"sent/0", "sent/1", "sent/2"} and by_id.hits
    assert [h.id for h in by_bytes.hits] == ["sent/0"] and by_bytes.hits[0].text == texts[0]
    assert client.delete(sentence_ids=["sent/0", "sent/1", "sent/2"]).deleted == 3


def test_similar_images(client: TeranClient, base: list[str]) -> None:
    by_bytes = client.search_similar_images(image=png(0), top_k=3, filter={"group": "a"})
    assert [h.id for h in by_bytes.hits] == ["base/0", "base/2", "base/4"][: len(by_bytes.hits)]
    assert by_bytes.hits[0].id == "base/0" and by_bytes.hits[0].payload == {"group": "a", "n": 0}
    assert by_bytes.words == [] and by_bytes.hits[0].alignment == [] and by_bytes.model_version
    assert by_bytes.hits[0].score == pytest.approx(49, abs=1e-2)  # each region finds itself
    by_id = client.search_similar_images(image_id="base/1", top_k=5, filter={"group": "b"})
    assert sorted(h.id for h in by_id.hits) == ["base/3", "base/5"]  # not base/1 itself
    assert by_id.hits[0].score >= by_id.hits[1].score
    with pytest.raises(TeranError) as err:
        client.search_similar_images(image_id="no/such/image")
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "image_id" in err.value.message
    with pytest.raises(ValueError, match="exactly one"):
        client.search_similar_images(image=png(0), image_id="base/0")


def test_health_and_unreachable_server(client: TeranClient) -> None:
    assert client.health()
    with TeranClient("127.0.0.1:1", timeout_s=1) as nowhere:
        assert not nowhere.health()
        with pytest.raises(TeranError) as err:
            nowhere.wait_ready(0.3, interval=0.1)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(TeranError) as err:
            nowhere.stats()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_ingest_folder_ids_are_relative_paths(client: TeranClient, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(png(3))
    (tmp_path / "sub" / "b.PNG").write_bytes(png(4))
    (tmp_path / "notes.txt").write_text("not an image")
    results = list(client.ingest_folder(tmp_path, payload={"batch": "folder"}))
    assert [(r.id, r.stored) for r in results] == [("a.png", True), ("sub/b.PNG", True)]
    hits = client.search("a shape.", top_k=10, filter={"batch": "folder"}).hits
    assert {h.id: h.uri for h in hits} == {
        "a.png": str((tmp_path / "a.png").resolve()),
        "sub/b.PNG": str((tmp_path / "sub" / "b.PNG").resolve()),
    }


def test_cli_ingest_search_stats_delete(server: RunningApp, tmp_path: Path) -> None:
    runner = CliRunner()
    address = ["--address", server.address]
    (tmp_path / "one.png").write_bytes(png(5))
    (tmp_path / "two.png").write_bytes(png(6))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = runner.invoke(
        cli_app, [*address, "ingest", str(tmp_path), "--payload", "batch=cli", "-p", "n=7"]
    )
    assert out.exit_code == 1, out.output  # one item failed
    assert "stored 2, failed 1" in out.output
    assert "broken.jpg: INVALID_ARGUMENT" in out.output

    out = runner.invoke(
        cli_app,
        [*address, "search", "a red circle", "--top-k", "5", "--explain", "--filter", "batch=cli"],
    )
    assert out.exit_code == 0, out.output
    assert "one.png" in out.output and "two.png" in out.output
    assert re.search(r"red->\d+", out.output) and "aligned words: a red circle" in out.output

    out = runner.invoke(cli_app, [*address, "search", "x", "--filter", "n=7", "--json"])
    assert out.exit_code == 0, out.output
    assert '"id": "one.png"' in out.output and '"n": 7' in out.output

    out = runner.invoke(cli_app, [*address, "search", "a cat", "--top-k", "1000"])
    assert out.exit_code == 2 and "INVALID_ARGUMENT" in out.output and "top_k" in out.output

    out = runner.invoke(cli_app, [*address, "stats"])
    assert out.exit_code == 0 and re.search(r"images: \d+", out.output)

    out = runner.invoke(cli_app, [*address, "delete", "one.png", "ghost.png"])
    assert out.exit_code == 0, out.output
    assert "deleted 1" in out.output and "not found: ghost.png" in out.output


def test_cli_value_parsing() -> None:
    assert parse_value("3") == 3 and parse_value("2.5") == 2.5 and parse_value("true") is True
    assert parse_value("cat") == "cat" and parse_value("null") == "null"


def test_report_draws_aligned_regions(client: TeranClient, base: list[str], tmp_path: Path) -> None:
    result = client.search("a red circle.", top_k=2, filter={"group": ["a", "b"]}, explain=True)
    images = {h.id: png(int(h.id.split("/")[1])) for h in result.hits if h.id.startswith("base/")}
    assert images
    thumb = annotate(next(iter(images.values())), result.hits[0].alignment)
    assert thumb.startswith(b"\x89PNG")
    run = QueryRun("a red circle.", result, target=result.hits[0].id, target_rank=1)
    path = write_report(tmp_path / "out" / "report.html", [run], images)
    text = path.read_text()
    assert path.is_file() and "a red circle." in text
    assert text.count("<img") == len(images) and "data:image/png;base64," in text
    assert "ranked #1" in text and "region " in text


def test_client_imports_without_the_model_stack() -> None:
    """A client app needs the contracts, not torch or transformers."""
    import subprocess
    import sys

    code = "import sys, teran_client; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
