"""`make bench-services`: the served system's throughput, latency and recall on this machine.

- Ingestion: images/s through ImageEncoder.Ingest (gRPC, decode, model, durable store write),
  against the model's own forward pass on the same images.
- Search: Ranker.Search latency (p50/p99) with 1 and 8 concurrent clients over collections of
  10k and 100k stored images. The collections hold random unit region vectors written straight
  into the embedded store (encoding 100k pictures on 2 CPU cores would take hours; the store's
  work does not depend on where the vectors came from).
- Recall@10 of served results against exhaustive exact MrSw over the whole collection.
- Storage per stored image (bytes on disk).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from services.config import load_settings
from services.inference.inprocess import InProcessBackend
from services.main import start
from services.store import StoredImage
from services.store.edge import EdgeStore
from teran.checkpoint import model_version
from teran.data.synthetic import SyntheticScenes
from teran.regions import to_pixels
from teran.v1 import image_encoder_pb2 as ipb
from teran.v1 import image_encoder_pb2_grpc as igrpc
from teran.v1 import ranker_pb2 as rpb
from teran.v1 import ranker_pb2_grpc as rgrpc

QUERIES = [
    "a red circle to the left of a blue square.",
    "a small green triangle above a large yellow cross.",
    "a white square at the bottom.",
    "there is a purple circle right of an orange triangle.",
    "a big blue cross and a small red square.",
    "two shapes: a green circle and a white triangle.",
    "an orange square below a purple cross.",
    "a yellow circle in the top left corner.",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--ingest-images", type=int, default=200)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--regions", type=int, default=16, help="regions per synthetic stored image")
    p.add_argument("--queries", type=int, default=24, help="timed searches per client setting")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="benchmarks/results/services.json")
    return p.parse_args(argv)


def png_bytes(image: Any) -> bytes:
    """A picture as a client sends it."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bench_ingest(checkpoint: Path, workdir: Path, n: int) -> dict[str, float]:
    scenes = SyntheticScenes(n, split="test", seed=11)
    pictures = [scenes.image(i) for i in range(n)]
    payloads = [png_bytes(p) for p in pictures]
    backend = InProcessBackend(checkpoint)
    size = backend.info.image_size or 224
    pixels = to_pixels(pictures, size).numpy()
    backend.encode_pixels(pixels[:2])  # warm-up
    t0 = time.perf_counter()
    for start_ in range(0, n, 16):
        backend.encode_pixels(pixels[start_ : start_ + 16])
    forward = time.perf_counter() - t0
    backend.close()
    settings = load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint)},
            "store": {"path": str(workdir / "ingest")},
        },
        server={"grpc_port": 0, "metrics_port": None},
    )
    running = start(settings)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = igrpc.ImageEncoderStub(channel)
            list(stub.Ingest(iter([ipb.IngestItem(id="warm", image=payloads[0])])))
            t0 = time.perf_counter()
            items = (ipb.IngestItem(id=f"img{i}", image=b) for i, b in enumerate(payloads))
            stored = sum(r.stored for r in stub.Ingest(items))
            served = time.perf_counter() - t0
    finally:
        running.stop(0)
    assert stored == n, f"only {stored} of {n} stored"
    return {
        "images": n,
        "model_forward_images_per_s": n / forward,
        "ingest_images_per_s": n / served,
        "ingest_vs_forward": forward / served,
    }


def _fill(path: Path, version: str, dim: int, n: int, regions: int, seed: int) -> np.ndarray:
    """Random unit region vectors for n images, written to an EdgeStore; returns them."""
    rng = np.random.default_rng(seed)
    store = EdgeStore(path, sync_writes=False)
    images = store.open(version, dim).images
    vectors = rng.standard_normal((n, regions, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    cells = np.linspace(0, 1, regions + 1, dtype=np.float32)
    boxes = np.stack([cells[:-1], cells[:-1], cells[1:], cells[1:]], -1)
    for start_ in range(0, n, 500):
        images.upsert(
            [
                StoredImage(id=f"s{i}", regions=vectors[i], boxes=boxes, payload={"k": i % 10})
                for i in range(start_, min(n, start_ + 500))
            ]
        )
    images.build_index()
    store.flush()
    store.close()
    return vectors


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_search(
    checkpoint: Path, workdir: Path, n: int, regions: int, queries: int
) -> dict[str, Any]:
    backend = InProcessBackend(checkpoint)
    version, dim = backend.info.version, backend.info.embed_dim
    backend.close()
    path = workdir / f"store-{n}"
    t0 = time.perf_counter()
    vectors = _fill(path, version, dim, n, regions, seed=n)
    fill_s = time.perf_counter() - t0
    disk = _folder_bytes(path)
    settings = load_settings(
        None,
        common={"model": {"checkpoint": str(checkpoint)}, "store": {"path": str(path)}},
        server={"grpc_port": 0, "metrics_port": None},
        ranker={"candidates": 100},
    )
    running = start(settings)
    out: dict[str, Any] = {"images": n, "regions_per_image": regions, "fill_s": fill_s}
    out["disk_bytes_per_image"] = disk / n
    out["raw_vector_bytes_per_image"] = regions * dim * 4
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = rgrpc.RankerStub(channel)
            stub.Search(rpb.SearchRequest(query=QUERIES[0], top_k=10))  # warm-up
            for clients in (1, 8):
                latencies: list[float] = []
                lock = threading.Lock()

                def client(
                    k: int,
                    clients: int = clients,
                    latencies: list[float] = latencies,
                    lock: threading.Lock = lock,
                ) -> None:
                    for q in range(k, queries, clients):
                        t = time.perf_counter()
                        stub.Search(rpb.SearchRequest(query=QUERIES[q % len(QUERIES)], top_k=10))
                        with lock:
                            latencies.append(time.perf_counter() - t)

                threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
                t0 = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                wall = time.perf_counter() - t0
                latencies.sort()
                out[f"clients_{clients}"] = {
                    "p50_ms": 1000 * statistics.median(latencies),
                    "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                    "queries_per_s": len(latencies) / wall,
                }
            out["recall_at_10"] = _recall(stub, running, vectors)
    finally:
        running.stop(0)
    shutil.rmtree(path, ignore_errors=True)
    return out


def _recall(stub: Any, running: Any, vectors: np.ndarray) -> float:
    """Served top-10 against exhaustive exact MrSw over every stored image."""
    text = running.app.components["text"]
    hits = 0
    for query in QUERIES:
        served = [h.id for h in stub.Search(rpb.SearchRequest(query=query, top_k=10)).hits]
        words = text.encode_one(query).words  # [W, D]
        scores = np.einsum("nrd,wd->nrw", vectors, words, optimize=True).max(1).sum(1)
        exact = {f"s{i}" for i in np.argsort(-scores)[:10]}
        hits += len(exact & set(served))
    return hits / (10 * len(QUERIES))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    checkpoint = Path(args.checkpoint)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teran-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": torch.get_num_threads(), "processor": platform.machine()},
        "model_version": model_version(checkpoint),
        "ingest": bench_ingest(checkpoint, workdir, args.ingest_images),
        "search": [
            bench_search(checkpoint, workdir, int(n), args.regions, args.queries)
            for n in args.sizes.split(",")
        ],
    }
    shutil.rmtree(workdir, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ing = report["ingest"]
    print(
        f"ingest: {ing['ingest_images_per_s']:.1f} img/s end to end, model forward "
        f"{ing['model_forward_images_per_s']:.1f} img/s (ratio {ing['ingest_vs_forward']:.2f})"
    )
    for s in report["search"]:
        print(
            f"{s['images']:>7} images: 1 client p50 {s['clients_1']['p50_ms']:.0f} ms p99 "
            f"{s['clients_1']['p99_ms']:.0f} ms | 8 clients p50 {s['clients_8']['p50_ms']:.0f} "
            f"ms p99 {s['clients_8']['p99_ms']:.0f} ms, {s['clients_8']['queries_per_s']:.1f} q/s"
            f" | recall@10 {s['recall_at_10']:.3f} | {s['disk_bytes_per_image'] / 1024:.1f} KiB"
            "/image on disk"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
