"""The services over a real tritonserver: same answers as in-process, and Triton outages survived.

One python-backend repository (pixels model included) is exported from a seeded checkpoint and
served by the tritonserver inside nvidia-pytriton; the services run in this process (`start`).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from services.config import ModelCfg, load_settings
from services.convert import to_boxes, to_matrix
from services.inference.base import InferenceUnavailable
from services.inference.inprocess import InProcessBackend
from services.inference.triton import TritonBackend
from services.main import RunningApp, start
from services.modules import TEXT
from services.text_encoder.client import TextEncoderClient
from teran import create_model, get_model_config
from teran.checkpoint import load_checkpoint, model_version, save_checkpoint
from teran.regions import GridRegionExtractor
from teran.triton_repo import MANIFEST_FILE, build_repository
from teran.tritonserver import TritonServer, free_port
from teran_protos.v1 import common_pb2
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc

TOL = 1e-4
QUERIES = ("a red square next to a blue circle.", "two dogs run on the beach")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def repository(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _ = load_checkpoint(checkpoint)
    assert model.cfg.vision.extractor is not None
    repo = tmp_path_factory.mktemp("repo")
    meta = {"path": str(checkpoint), "model_version": model_version(checkpoint)}
    extractor = GridRegionExtractor(model.cfg.vision.extractor)
    build_repository(model, repo, extractor=extractor, backend="python", meta=meta)
    return repo


@dataclass
class Triton:
    """The module's server; the outage test replaces it with one on the same ports."""

    server: TritonServer


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[Triton]:
    box = Triton(TritonServer(repository))
    box.server.start()
    yield box
    box.server.stop()


def _settings(checkpoint: Path, store: Path, inference: dict[str, Any], **extra: Any) -> Any:
    return load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint), "repository": extra.pop("repository", None)},
            "inference": inference,
            "store": {"path": str(store)},
        },
        server={"grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 1},
        **extra,
    )


def _triton_settings(
    checkpoint: Path, repository: Path, url: str, store: Path, **extra: Any
) -> Any:
    inference = {"backend": "triton", "triton_url": url}
    return _settings(checkpoint, store, inference, repository=str(repository), **extra)


@pytest.fixture(scope="module")
def over_triton(
    checkpoint: Path, repository: Path, triton: Triton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApp]:
    store = tmp_path_factory.mktemp("store-triton")
    running = start(_triton_settings(checkpoint, repository, triton.server.grpc_url, store))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def in_process(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    store = tmp_path_factory.mktemp("store-inprocess")
    running = start(_settings(checkpoint, store, {"backend": "inprocess"}))
    yield running
    running.stop(0)


def _regions(i: int, dim: int = 320) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(i)
    n = int(gen.integers(3, 12))
    x1y1 = gen.uniform(0, 0.5, size=(n, 2))
    boxes = np.concatenate([x1y1, x1y1 + gen.uniform(0.1, 0.5, size=(n, 2))], 1)
    return gen.standard_normal((n, dim)).astype(np.float32), boxes.astype(np.float32)


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    picture = Image.new("RGB", size, colour)
    picture.paste((255 - colour[0], colour[2], colour[1]), (4, 4, size[0] // 2, size[1] // 2))
    picture.save(out, "PNG")
    return out.getvalue()


def _items() -> list[ipb.IngestItem]:
    items = [
        ipb.IngestItem(id=f"png{i}", image=_png(colour, size))
        for i, (colour, size) in enumerate(
            [((200, 30, 30), (96, 64)), ((20, 40, 220), (64, 80)), ((30, 180, 60), (120, 90))]
        )
    ]
    for i in range(6):
        features, boxes = _regions(i)
        regions = common_pb2.RegionFeatures(features=to_matrix(features), boxes=to_boxes(boxes))
        items.append(ipb.IngestItem(id=f"reg{i}", regions=regions))
    return items


def _ingest(address: str, items: list[ipb.IngestItem]) -> None:
    with grpc.insecure_channel(address) as channel:
        results = list(igrpc.ImageEncoderStub(channel).Ingest(iter(items)))
    assert [r.id for r in results] == [i.id for i in items]
    assert all(r.stored for r in results), [r.message for r in results if not r.stored]


def _search(address: str, query: str, top_k: int = 20) -> list[tuple[str, float]]:
    with grpc.insecure_channel(address) as channel:
        response = rgrpc.RankerStub(channel).Search(rpb.SearchRequest(query=query, top_k=top_k))
    return [(h.id, h.score) for h in response.hits]


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)


def _wait_health(address: str, status: int, within: float) -> float:
    start_at = time.monotonic()
    while time.monotonic() - start_at < within:
        if _health(address) == status:
            return time.monotonic() - start_at
        time.sleep(0.1)
    raise AssertionError(f"health of {address} not {status} within {within}s")


def _assert_same_hits(ours: list[tuple[str, float]], theirs: list[tuple[str, float]]) -> None:
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    for (_, a), (_, b) in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=TOL)


# --- the backend alone --------------------------------------------------------------------


def test_triton_backend_equals_in_process_backend(
    checkpoint: Path, repository: Path, triton: Triton
) -> None:
    cfg = ModelCfg(checkpoint=checkpoint, repository=repository)
    backend = TritonBackend(triton.server.grpc_url, cfg, timeout_s=30)
    reference = InProcessBackend(checkpoint)
    try:
        assert backend.info == reference.info
        assert backend.healthy()
        _, tokenizer = load_checkpoint(checkpoint)
        tokens = tokenizer([*QUERIES, "A dog."])
        ids, lengths = tokens.ids.numpy(), tokens.lengths.numpy()
        words = backend.encode_text(ids, lengths)
        assert words.shape == (3, ids.shape[1], 256)
        assert np.abs(words - reference.encode_text(ids, lengths)).max() <= TOL

        gen = np.random.default_rng(0)
        features = gen.standard_normal((3, 9, 320)).astype(np.float32)
        boxes = gen.uniform(0, 1, (3, 9, 4)).astype(np.float32)
        counts = np.array([9, 2, 5])
        slots = backend.encode_regions(features, boxes, counts)
        expected = reference.encode_regions(features, boxes, counts)
        assert slots.shape == expected.shape == (3, 10, 256)
        assert np.abs(slots - expected).max() <= TOL
        backend.max_batch[backend.image_model] = 2  # larger calls are split, same answers
        assert np.abs(backend.encode_regions(features, boxes, counts) - expected).max() <= TOL

        pixels = gen.uniform(0, 1, (2, 3, 224, 224)).astype(np.float32)
        (grid, cells), (ref_grid, ref_cells) = (
            backend.encode_pixels(pixels),
            reference.encode_pixels(pixels),
        )
        assert grid.shape == ref_grid.shape == (2, 50, 256)
        assert np.abs(grid - ref_grid).max() <= TOL
        assert np.abs(cells - ref_cells).max() <= TOL
    finally:
        backend.close()
        reference.close()
    with pytest.raises(InferenceUnavailable, match="closed"):
        backend.encode_text(ids, lengths)


def test_triton_down_at_start_and_repository_mismatch(
    checkpoint: Path, repository: Path, triton: Triton, tmp_path: Path
) -> None:
    url = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    backend = TritonBackend(url, ModelCfg(checkpoint=checkpoint, repository=repository))
    assert time.monotonic() - t0 < 5  # starts without the server, and without hanging
    assert not backend.healthy()
    with pytest.raises(InferenceUnavailable) as info:
        backend.encode_text(np.ones((1, 3), np.int64), np.array([3]))
    assert url in str(info.value) and "teran_text_encoder" in str(info.value)
    backend.close()

    manifest = json.loads((repository / MANIFEST_FILE).read_text())
    for key, value, message in (
        ("embed_dim", 128, "embed_dim"),
        ("checkpoint", {"model_version": "0123456789ab"}, "weights"),
        ("extractor", {**manifest["extractor"], "image_size": 256}, "extractor"),
    ):
        other = tmp_path / key
        other.mkdir()
        (other / MANIFEST_FILE).write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(ValueError, match=message):
            TritonBackend(url, ModelCfg(checkpoint=checkpoint, repository=other))

    # a reachable server that serves another model (128-d) is refused at start too
    cfg = get_model_config("teran-minilm-tiny")
    cfg.embed_dim = 128
    other_model, tokenizer = create_model(cfg)
    save_checkpoint(other_model, tokenizer, tmp_path / "other", bundled_backbone=True)
    with pytest.raises(ValueError, match="WORD_EMBEDDINGS"):
        TritonBackend(triton.server.grpc_url, ModelCfg(checkpoint=tmp_path / "other"))


# --- the services -------------------------------------------------------------------------


def test_search_over_triton_equals_in_process(
    over_triton: RunningApp, in_process: RunningApp
) -> None:
    items = _items()
    _ingest(over_triton.address, items)
    _ingest(in_process.address, items)
    for query in QUERIES:
        ours = _search(over_triton.address, query)
        assert len(ours) == len(items)
        _assert_same_hits(ours, _search(in_process.address, query))


def test_ranker_reaches_text_encoder_over_grpc(
    checkpoint: Path,
    repository: Path,
    triton: Triton,
    over_triton: RunningApp,
    tmp_path: Path,
) -> None:
    url = triton.server.grpc_url
    store = tmp_path / "store"
    # the embedded store opens in one process at a time: index first, then serve searches
    indexer = start(_triton_settings(checkpoint, repository, url, store, target="image_encoder"))
    items = [i for i in _items() if i.id.startswith("reg")]
    try:
        _ingest(indexer.address, items)
    finally:
        indexer.stop(0)
    text = start(_triton_settings(checkpoint, repository, url, tmp_path, target="text_encoder"))
    ranker = None
    try:
        ranker = start(
            _triton_settings(
                checkpoint,
                repository,
                url,
                store,
                target="ranker",
                ranker={"text_encoder_url": text.address},
            )
        )
        assert isinstance(ranker.app.components[TEXT], TextEncoderClient)
        for query in QUERIES:
            hits = _search(ranker.address, query)
            everything = dict(_search(over_triton.address, query))
            assert [h for h, _ in hits] == [h for h, _ in everything.items() if h.startswith("reg")]
            for key, score in hits:
                assert score == pytest.approx(everything[key], abs=TOL)
        with grpc.insecure_channel(ranker.address) as channel:
            stub = rgrpc.RankerStub(channel)
            for query in (" ".join(["dog"] * 200), "   "):  # refused by the peer / the ranker
                with pytest.raises(grpc.RpcError) as info:
                    stub.Search(rpb.SearchRequest(query=query))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert (info.value.details() or "").startswith("query"), info.value.details()
    finally:
        if ranker is not None:
            ranker.stop(0)
        text.stop(0)


def test_triton_outage_turns_health_off_and_back_without_restart(
    repository: Path, triton: Triton, over_triton: RunningApp
) -> None:
    address = over_triton.address
    before = _search(address, QUERIES[0])
    assert _health(address) == SERVING
    server = triton.server
    ports = (server.grpc_port, server.http_port, server.metrics_port)
    server.stop()

    with pytest.raises(grpc.RpcError) as info:
        _search(address, QUERIES[0])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details() or ""
    assert details.startswith("inference: Triton at") and server.grpc_url in details, details
    _wait_health(address, NOT_SERVING, within=6)
    assert _health(address, "liveness") == SERVING  # not ready, but alive: no restart

    triton.server = TritonServer(repository, ports=ports)
    triton.server.start()
    _wait_health(address, SERVING, within=15)
    _assert_same_hits(_search(address, QUERIES[0]), before)


def test_local_up_status_search_down(
    checkpoint: Path, repository: Path, over_triton: RunningApp, tmp_path: Path
) -> None:
    """`teran_dev.local up` leaves Triton and the services running after it returns."""
    workdir = tmp_path / "up"
    workdir.mkdir()
    # the module's export stands in for the one `up` would make (same checkpoint and version)
    shutil.copytree(repository, workdir / f"repository-{model_version(checkpoint)}")

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "teran_dev.local", *args, "--workdir", str(workdir)]
        return subprocess.run(command, capture_output=True, text=True, timeout=240)

    try:
        started = local("up", "--checkpoint", str(checkpoint))
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads((workdir / "state.json").read_text())
        procs = {p["name"]: p for p in state["processes"]}
        assert set(procs) == {"tritonserver", "text_encoder", "ranker"}
        status = local("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("SERVING") == 2 and "READY" in status.stdout
        ranker = procs["ranker"]["address"]
        items = [i for i in _items() if i.id.startswith("reg")]
        _ingest(ranker, items)  # the ranker's process hosts the ImageEncoder too (one store)
        for query in QUERIES:
            everything = dict(_search(over_triton.address, query))
            for key, score in _search(ranker, query):
                assert score == pytest.approx(everything[key], abs=TOL)
    finally:
        stopped = local("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "still running" not in stopped.stdout
    assert not (workdir / "state.json").exists()
    for proc in procs.values():
        assert not Path(f"/proc/{proc['pid']}").exists() or _zombie(proc["pid"]), proc
    assert local("status").returncode == 1


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True
