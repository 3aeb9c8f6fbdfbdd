"""Zero-downtime model upgrades end to end, single-process mode (embedded store, real gRPC).

Two real model versions (the shipped demo model and a re-seeded one) are served by one process;
the upgrade re-encodes every source into the new version while clients search and ingest, then
switches the aliases. Searches must all succeed and each must be answered by one version only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from services.config import load_settings
from services.convert import from_matrix, to_boxes, to_matrix
from services.main import RunningApp, start
from services.store import Source
from services.upgrade.__main__ import app as upgrade_cli
from teran import create_model
from teran.checkpoint import load_checkpoint, model_version, save_checkpoint
from teran_protos.v1 import admin_pb2 as apb
from teran_protos.v1 import admin_pb2_grpc as agrpc
from teran_protos.v1 import common_pb2
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from teran_protos.v1 import text_encoder_pb2 as tpb
from teran_protos.v1 import text_encoder_pb2_grpc as tgrpc

DEMO = Path(__file__).resolve().parents[2] / "models" / "teran-synthetic-tiny"
QUERIES = ["a red circle.", "two blue squares.", "a green triangle near a square."]
Phase = apb.UpgradeProgress.Phase


@pytest.fixture(scope="module")
def next_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model version with the demo model's architecture and tokenizer."""
    old, tokenizer = load_checkpoint(DEMO)
    torch.manual_seed(1)
    new, _ = create_model("teran-minilm-tiny")
    new.load_state_dict(old.state_dict())
    with torch.no_grad():  # a different head: different vectors, same shapes
        for p in new.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("next") / "next"
    save_checkpoint(new, tokenizer, folder, bundled_backbone=True)
    assert model_version(folder) != model_version(DEMO)
    return folder


def _settings(store: Path, model: Path, standby: list[Path]) -> Any:
    return load_settings(
        None,
        common={
            "model": {"checkpoint": str(model)},
            "standby_models": [{"checkpoint": str(p)} for p in standby],
            "store": {"path": str(store)},
        },
        server={"grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 1},
        ranker={"candidates": 20},
    )


def _item(i: int, prefix: str = "r") -> ipb.IngestItem:
    gen = np.random.default_rng(i)
    n = int(gen.integers(3, 10))
    x1y1 = gen.uniform(0, 0.5, size=(n, 2))
    boxes = np.concatenate([x1y1, x1y1 + gen.uniform(0.1, 0.5, size=(n, 2))], 1)
    regions = common_pb2.RegionFeatures(
        features=to_matrix(gen.standard_normal((n, 320)).astype(np.float32)),
        boxes=to_boxes(boxes.astype(np.float32)),
    )
    return ipb.IngestItem(id=f"{prefix}{i:03d}", regions=regions, uri=f"mem://{prefix}{i}")


def _ingest(channel: grpc.Channel, items: list[ipb.IngestItem]) -> None:
    results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(items)))
    assert all(r.stored for r in results), [r.message for r in results if not r.stored]


@pytest.fixture
def running(tmp_path: Path, next_model: Path) -> Iterator[tuple[RunningApp, grpc.Channel]]:
    app = start(_settings(tmp_path / "store", DEMO, [next_model]))
    channel = grpc.insecure_channel(app.address)
    yield app, channel
    channel.close()
    app.stop(0)


def test_upgrade_keeps_search_answering_and_never_mixes_versions(
    running: tuple[RunningApp, grpc.Channel], next_model: Path, tmp_path: Path
) -> None:
    app, channel = running
    old, new = model_version(DEMO), model_version(next_model)
    ranker, admin = rgrpc.RankerStub(channel), agrpc.AdminStub(channel)
    _ingest(channel, [_item(i) for i in range(120)])
    ranker.IngestSentences(
        rpb.IngestSentencesRequest(
            sentences=[rpb.Sentence(id=f"s{i}", text=q) for i, q in enumerate(QUERIES)]
        )
    )
    before = {q: ranker.Search(rpb.SearchRequest(query=q, top_k=5)) for q in QUERIES}
    assert {r.model_version for r in before.values()} == {old}

    answers: list[tuple[str, str, list[tuple[str, float]]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def search_all_along() -> None:
        k = 0
        while not stop.is_set():
            query = QUERIES[k % len(QUERIES)]
            try:
                r = ranker.Search(rpb.SearchRequest(query=query, top_k=5))
                answers.append((query, r.model_version, [(h.id, h.score) for h in r.hits]))
            except grpc.RpcError as err:
                errors.append(f"{err.code().name}: {err.details()}")
            k += 1

    def ingest_all_along() -> None:
        k = 0
        while not stop.is_set():  # writes during the copy and around the switch
            try:
                _ingest(channel, [_item(1000 + k, "late")])
            except (AssertionError, grpc.RpcError) as err:
                errors.append(f"ingest: {err}")
            k += 1

    threads = [threading.Thread(target=search_all_along), threading.Thread(target=ingest_all_along)]
    for t in threads:
        t.start()
    progress = list(admin.Upgrade(apb.UpgradeRequest(grace_seconds=0.5)))  # empty: the standby
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()

    assert not errors, errors[:3]
    phases = [p.phase for p in progress]
    assert phases[0] == Phase.COPY and phases[-1] == Phase.DONE and Phase.SWITCH in phases
    assert progress[-1].live_version == new
    versions = [v for _, v, _ in answers]
    assert old in versions and new in versions, "searches ran before and after the switch"
    switched = versions.index(new)
    assert set(versions[switched:]) == {new}, "once switched, never back"

    # every answer is one version's own: its scores are that version's query words against that
    # version's stored regions (a mix of versions would not reproduce them)
    store = app.app.components["store"]
    text = tgrpc.TextEncoderStub(channel)
    words = {}
    for version in (old, new):
        reply = text.EncodeText(tpb.EncodeTextRequest(sentences=QUERIES, model_version=version))
        assert reply.model_version == version
        for q, e in zip(QUERIES, reply.sentences, strict=True):
            vectors = from_matrix(e.embeddings, "embeddings")
            words[(version, q)] = vectors[e.first_word : e.first_word + e.word_count]
    for query, version, hits in answers[:: max(1, len(answers) // 60)]:
        stored = store.index(version).images.get([i for i, _ in hits])
        w = words[(version, query)]
        exact = [float((w @ im.regions.T).max(axis=1).sum()) for im in stored]  # MrSw
        np.testing.assert_allclose([s for _, s in hits], exact, atol=1e-4)

    # the new version holds exactly the sources, each at its latest revision
    for kind in ("image", "sentence"):
        assert store.index(new).of(kind).revisions() == store.source_revisions(kind)
    late = [i for i in store.source_revisions("image") if i.startswith("late")]
    assert late, "ingestion ran during the upgrade"
    assert store.index(new).images.count() == 120 + len(late)

    # the new index equals encoding the sources with the new model directly
    regions = store.index(new).images.get(["r007"])[0].regions
    encoded = igrpc.ImageEncoderStub(channel).EncodeImage(
        ipb.EncodeImageRequest(regions=_item(7).regions, model_version=new)
    )
    np.testing.assert_allclose(regions, from_matrix(encoded.regions, "regions"), atol=1e-5)
    assert not np.allclose(regions, store.index(old).images.get(["r007"])[0].regions, atol=1e-3)

    # a second run on the live version is a no-op repair
    again = list(admin.Upgrade(apb.UpgradeRequest(model_version=new, grace_seconds=0)))
    assert [p.total for p in again if p.phase == Phase.COPY][-1] == 0

    # dashboards follow the upgrade through its gauges
    sample = REGISTRY.get_sample_value
    assert sample("teran_upgrade_phase", {"model_version": new}) == Phase.DONE
    done = sample("teran_upgrade_items", {"model_version": new, "state": "done"})
    assert done == sample("teran_upgrade_items", {"model_version": new, "state": "total"})

    status = admin.Status(apb.StatusRequest())
    assert status.live_version == new and status.image_sources == 120 + len(late)
    assert {v.model_version: (v.live, v.loaded) for v in status.versions} == {
        new: (True, True),
        old: (False, True),
    }


def test_cli_runs_the_upgrade_and_drops_the_old_version(
    running: tuple[RunningApp, grpc.Channel], next_model: Path
) -> None:
    app, channel = running
    old, new = model_version(DEMO), model_version(next_model)
    _ingest(channel, [_item(i) for i in range(10)])
    cli = CliRunner()
    result = cli.invoke(
        upgrade_cli, ["run", "--address", app.address, "--to", new, "--grace-s", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "switch" in result.output and f"live: {new}" in result.output

    result = cli.invoke(upgrade_cli, ["drop", "--address", app.address, "--version", new])
    assert (
        result.exit_code == 1 and "FAILED_PRECONDITION" in result.output and "live" in result.output
    )
    result = cli.invoke(upgrade_cli, ["drop", "--address", app.address, "--version", old])
    assert result.exit_code == 0, result.output
    result = cli.invoke(upgrade_cli, ["status", "--address", app.address])
    assert result.exit_code == 0, result.output
    assert f"live {new}" in result.output and "10 images" in result.output
    old_line = next(line for line in result.output.splitlines() if old in line)
    assert "[loaded]" in old_line, old_line  # still loaded by the process, collections gone

    # rolling back re-creates the old version's collections from the sources
    result = cli.invoke(upgrade_cli, ["run", "--address", app.address, "--grace-s", "0"])
    assert result.exit_code == 0 and f"live: {old}" in result.output, result.output
    store = app.app.components["store"]
    assert store.index(old).images.revisions() == store.source_revisions("image")


def test_bad_upgrade_requests(running: tuple[RunningApp, grpc.Channel]) -> None:
    _, channel = running
    admin = agrpc.AdminStub(channel)
    cases = [
        (apb.UpgradeRequest(model_version="no such/version"), "INVALID_ARGUMENT", "model_version"),
        (apb.UpgradeRequest(model_version="abc123"), "FAILED_PRECONDITION", "not loaded"),
        (apb.UpgradeRequest(grace_seconds=-1), "INVALID_ARGUMENT", "grace_seconds"),
    ]
    for request, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(admin.Upgrade(request))
        assert err.value.code().name == code and words in (err.value.details() or ""), request
    with pytest.raises(grpc.RpcError) as err:
        admin.DropVersion(apb.DropVersionRequest(model_version="../x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sources_the_new_model_cannot_encode_are_skipped_and_reported(
    running: tuple[RunningApp, grpc.Channel], next_model: Path
) -> None:
    app, channel = running
    new = model_version(next_model)
    _ingest(channel, [_item(i) for i in range(5)])
    store = app.app.components["store"]
    narrow = Source(
        "odd", "image", "rev-1", features=np.ones((2, 7), np.float32), boxes=np.zeros((2, 4))
    )
    long = Source("long", "sentence", "rev-1", text=" ".join(["word"] * 70))
    store.put_sources([narrow, long])  # another model family's; a sentence stored unchecked
    progress = list(agrpc.AdminStub(channel).Upgrade(apb.UpgradeRequest(grace_seconds=0)))
    done = progress[-1]
    assert done.phase == Phase.DONE and done.live_version == new
    assert done.skipped == 2, done
    examples = " ".join(done.skipped_examples)
    assert "image 'odd'" in examples and "sentence 'long'" in examples and "tokens" in examples
    assert store.live_version(fresh=True) == new
    assert sorted(store.index(new).images.revisions()) == [f"r{i:03d}" for i in range(5)]
    assert store.index(new).sentences.count() == 0
    sample = REGISTRY.get_sample_value
    assert sample("teran_upgrade_items", {"model_version": new, "state": "skipped"}) == 2


def test_restart_needs_the_live_version_loaded(
    running: tuple[RunningApp, grpc.Channel], next_model: Path, tmp_path: Path
) -> None:
    app, channel = running
    new = model_version(next_model)
    _ingest(channel, [_item(i) for i in range(3)])
    list(agrpc.AdminStub(channel).Upgrade(apb.UpgradeRequest(grace_seconds=0)))
    app.stop(0)
    with pytest.raises(ValueError, match=f"live model version is {new}"):
        start(_settings(tmp_path / "store", DEMO, []))
    again = start(_settings(tmp_path / "store", next_model, []))  # the new model alone
    try:
        with grpc.insecure_channel(again.address) as ch:
            reply = rgrpc.RankerStub(ch).Search(rpb.SearchRequest(query=QUERIES[0], top_k=3))
        assert reply.model_version == new and len(reply.hits) == 3
    finally:
        again.stop(0)
