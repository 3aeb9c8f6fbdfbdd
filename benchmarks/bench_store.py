"""Upsert throughput, exact MaxSim query latency and disk cost of the vector-store backends.

Decides which backend can hold how many images on one node: synthetic images shaped like TERAN's
(36 regions x 256-d, L2-normalised), a 12-word query, limit 100, exact search (the only mode we
serve, see services/store/qdrant.py). Backends: QdrantStore in local path mode (pure Python, the
test backend), EdgeStore with a flush per upsert call (power-loss durable) and without
(process-crash durable only). A Qdrant server is not installable here, so it is not measured.

Run from the repository root: `python -m benchmarks.bench_store --sizes 1000,10000`. Results are
printed and written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from services.store import IndexLayout, StoredImage, VectorStore
from services.store.edge import EdgeStore
from services.store.qdrant import QdrantStore

EXACT = IndexLayout(search="exact")
"""This benchmark compares the backends' exhaustive MaxSim (bench-scale measures two-stage)."""
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "store.json"
BACKENDS = ("qdrant-local-path", "edge", "edge-nosync")


def make_store(backend: str, folder: Path) -> VectorStore:
    if backend == "qdrant-local-path":
        return QdrantStore(QdrantClient(path=str(folder)), layout=EXACT)
    if backend == "edge":
        return EdgeStore(folder, sync_writes=True, layout=EXACT)
    if backend == "edge-nosync":
        return EdgeStore(folder, sync_writes=False, layout=EXACT)
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def image_batches(
    n: int, regions: int, dim: int, batch: int, seed: int
) -> Iterator[list[StoredImage]]:
    rng = np.random.default_rng(seed)
    boxes = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (regions, 1))
    for start in range(0, n, batch):
        vecs = unit(rng, (min(batch, n - start), regions, dim))
        yield [
            StoredImage(f"img-{start + i}", v, boxes, f"file://{start + i}.jpg", {"shard": i % 8})
            for i, v in enumerate(vecs)
        ]


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes: edge preallocates sparse 32 MB mmap files, so both matter."""
    allocated = apparent = 0
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def run_one(backend: str, n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    folder = root / f"{backend}-{n}"
    store = make_store(backend, folder)
    images = store.open("bench", args.dim).images
    upsert_s = 0.0
    for items in image_batches(n, args.regions, args.dim, args.batch, args.seed):
        t0 = time.perf_counter()
        images.upsert(items)
        upsert_s += time.perf_counter() - t0
    assert images.count() == n

    rng = np.random.default_rng(args.seed + 1)
    queries = unit(rng, (args.warmup + args.queries, args.words, args.dim))
    lat_ms: list[float] = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        hits = images.search(q, args.limit)
        dt = (time.perf_counter() - t0) * 1000
        assert len(hits) == min(args.limit, n)
        if i >= args.warmup:
            lat_ms.append(dt)
    store.close()

    t0 = time.perf_counter()
    reopened = make_store(backend, folder)
    reopened_images = reopened.open("bench", args.dim).images
    reopen_s = time.perf_counter() - t0
    assert reopened_images.count() == n
    reopened.close()

    allocated, apparent = disk_bytes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    lat_ms.sort()
    return {
        "backend": backend,
        "n": n,
        "upsert_s": round(upsert_s, 3),
        "upsert_images_per_s": round(n / upsert_s, 1),
        "query_p50_ms": round(statistics.median(lat_ms), 2),
        "query_p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
        "queries": len(lat_ms),
        "reopen_s": round(reopen_s, 3),
        "disk_bytes_per_image": round(allocated / n),
        "apparent_bytes_per_image": round(apparent / n),
        "raw_vector_bytes_per_image": args.regions * args.dim * 4,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="1000,10000", help="comma-separated image counts")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"subset of {BACKENDS}")
    p.add_argument(
        "--skip",
        default="",
        help="backend:size pairs to leave out, e.g. qdrant-local-path:10000 (slow, pure Python)",
    )
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--words", type=int, default=12)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="images per upsert call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", type=Path, default=None, help="folder for the stores (default: tmp)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    skip = {s for s in args.skip.split(",") if s}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in sizes:
            for backend in backends:
                if f"{backend}:{n}" in skip:
                    continue
                row = run_one(backend, n, args, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)

    header = (
        f"{'backend':<18} {'N':>6} {'upsert img/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'reopen s':>8} {'disk B/img':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:<18} {r['n']:>6} {r['upsert_images_per_s']:>12.0f} "
            f"{r['query_p50_ms']:>8.1f} {r['query_p99_ms']:>8.1f} {r['reopen_s']:>8.2f} "
            f"{r['disk_bytes_per_image']:>10}"
        )
    uname = platform.uname()
    result = {
        "benchmark": "store",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "system": uname.system,
            "release": uname.release,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "qdrant_client": version("qdrant-client"),
            "qdrant_edge_py": version("qdrant-edge-py"),
        },
        "params": {
            "regions": args.regions,
            "dim": args.dim,
            "words": args.words,
            "limit": args.limit,
            "queries": args.queries,
            "batch": args.batch,
            "exact": True,
            "skipped": sorted(skip),
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
