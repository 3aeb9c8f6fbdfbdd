"""`make bench-scale`: search latency, throughput, recall and memory against collection size.

Every figure is measured through the public gRPC API of a running server (`python -m services`,
its own process, text encoding included) on this machine:

- Search (sentence -> images) over 10k / 100k (/ 1M with `--sizes`) images, and SearchSentences
  (image -> sentences) over as many sentences (up to `--max-sentences`).
- Corpora: `realistic` = the demo model's own regions and captions (`benchmarks.scale_corpus`:
  20k encoded images, expanded by a statistics-preserving crossover), queries = encoded held-out
  captions; `random` = unit Gaussian region vectors with the same queries (the old baseline).
- Ground truth = exact MrSw over the same corpus, computed here in numpy; recall@10 is the share
  of each query's true top 10 that the server returned.
- Settings: search mode (exact scan, or two-stage: HNSW summary candidates, then MaxSim), the
  candidate count and the quantization of the stored regions (none, int8, binary with
  rescoring; quantized runs keep the original vectors on disk).
- Memory: the server's resident set (anonymous + file-backed pages, `/proc/<pid>/status`) after
  the timed queries, less that of the same server over an empty store, per stored item; disk:
  the store folder's allocated bytes per item.

The stores are written straight into the embedded engine (encoding 100k pictures on 2 cores
would take hours; the store's work does not depend on where the vectors came from), then
indexed once, as after a bulk load.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale_corpus import (
    ScaleCorpus,
    expand_images,
    expand_sentences,
    load_or_build,
    random_images,
)
from benchmarks.served import TORCH_THREADS, Server, run_clients
from services.config import StoreCfg
from services.store import IndexLayout, StoredImage, StoredSentence
from services.store.edge import EdgeStore
from teran_protos.v1 import ranker_pb2 as rpb

K = 10


@dataclass(frozen=True)
class Setting:
    mode: str
    candidates: int
    quantization: str
    pooled_vectors: int = IndexLayout.pooled_vectors

    def store_cfg(self) -> dict[str, Any]:
        quantized = self.quantization != "none"
        return {
            "search": self.mode,
            "quantization": self.quantization,
            "pooled_vectors": self.pooled_vectors,
            "originals_on_disk": quantized,
            "oversampling": 4.0,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--corpora", default="realistic,random")
    p.add_argument("--candidates", default="100,200,400", help="two-stage candidate counts")
    p.add_argument("--quantizations", default="none,int8,binary")
    p.add_argument(
        "--pooled-vectors",
        type=int,
        default=IndexLayout.pooled_vectors,
        help="centroids per item in the first stage",
    )
    p.add_argument("--queries", type=int, default=200, help="timed queries, one client")
    p.add_argument("--exact-queries", type=int, default=30, help="timed exact-scan queries")
    p.add_argument("--load-s", type=float, default=8.0, help="seconds of eight-client load")
    p.add_argument("--max-sentences", type=int, default=100_000)
    p.add_argument("--corpus-images", type=int, default=20_000)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="benchmarks/results/scale.json")
    p.add_argument(
        "--merge", action="store_true", help="keep the runs of other corpora and sizes in --out"
    )
    p.add_argument("--plot", default="benchmarks/results/scale.png")
    return p.parse_args(argv)


# -- ground truth ------------------------------------------------------------------------------


def _top_merge(best: list[list[tuple[float, int]]], scores: np.ndarray, first: int) -> None:
    """Fold a chunk's scores [Q, B] into each query's running top K (min-heaps)."""
    top = np.argpartition(-scores, min(K, scores.shape[1] - 1), axis=1)[:, :K]
    for q, row in enumerate(top):
        for j in row:
            item = (float(scores[q, j]), first + int(j))
            if len(best[q]) < K:
                heapq.heappush(best[q], item)
            elif item > best[q][0]:
                heapq.heapreplace(best[q], item)


def truth_images(chunks: Iterator[np.ndarray], queries: list[np.ndarray]) -> list[set[int]]:
    """Exact MrSw top K of each query (word sets) over every image of the chunks."""
    words = np.concatenate(queries)
    starts = np.cumsum([0, *(len(q) for q in queries[:-1])])
    best: list[list[tuple[float, int]]] = [[] for _ in queries]
    first = 0
    for chunk in chunks:
        for s in range(0, len(chunk), 512):
            block = chunk[s : s + 512]
            cells = block.reshape(-1, block.shape[-1]) @ words.T  # [B*R, sumW]
            best_region = cells.reshape(len(block), -1, len(words)).max(axis=1)  # [B, sumW]
            scores = np.add.reduceat(best_region, starts, axis=1).T  # [Q, B]
            _top_merge(best, scores, first + s)
        first += len(chunk)
    return [{i for _, i in b} for b in best]


def truth_sentences(chunks: Iterator[list[np.ndarray]], images: list[np.ndarray]) -> list[set[int]]:
    """Exact MrSw top K of each query image (regions) over every sentence of the chunks."""
    regions = np.concatenate(images)  # [Q*R, D]
    n_regions = images[0].shape[0]
    best: list[list[tuple[float, int]]] = [[] for _ in images]
    first = 0
    for chunk in chunks:
        for s in range(0, len(chunk), 512):
            block = chunk[s : s + 512]
            words = np.concatenate(block)
            starts = np.cumsum([0, *(len(w) for w in block[:-1])])
            cells = (words @ regions.T).reshape(len(words), len(images), n_regions)
            best_region = cells.max(axis=2)  # [sumW, Q]
            scores = np.add.reduceat(best_region, starts, axis=0).T  # [Q, B]
            _top_merge(best, scores, first + s)
        first += len(chunk)
    return [{i for _, i in b} for b in best]


# -- stores ------------------------------------------------------------------------------------


def _image_chunks(corpus: ScaleCorpus, name: str, n: int) -> Iterator[np.ndarray]:
    if name == "random":
        return random_images(n, corpus.regions.shape[1], corpus.regions.shape[2], seed=5)
    return expand_images(corpus, n, seed=0)


def build(
    folder: Path,
    layout: IndexLayout,
    corpus: ScaleCorpus,
    name: str,
    n: int,
    n_sentences: int,
) -> float:
    """Write n images (and n_sentences sentences) into a fresh store; returns seconds taken."""
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    bulk = dataclasses.replace(layout, indexing_threshold=1 << 40)
    store = EdgeStore(folder, sync_writes=False, layout=bulk)
    dim = corpus.regions.shape[2]
    index = store.open(corpus.checkpoint_version, dim)
    boxes = corpus.boxes if corpus.boxes.ndim == 2 else corpus.boxes[0]
    first = 0
    for chunk in _image_chunks(corpus, name, n):
        for s in range(0, len(chunk), 512):
            part = chunk[s : s + 512]
            index.images.upsert(
                [
                    StoredImage(f"img{first + s + j}", part[j], boxes, payload={"shard": j % 8})
                    for j in range(len(part))
                ]
            )
        first += len(chunk)
    if n_sentences:
        first = 0
        for chunk_s in expand_sentences(corpus, n_sentences, seed=0):
            for s in range(0, len(chunk_s), 512):
                part_s = chunk_s[s : s + 512]
                index.sentences.upsert(
                    [
                        StoredSentence(f"sen{first + s + j}", "", w, ["w"] * len(w))
                        for j, w in enumerate(part_s)
                    ]
                )
            first += len(chunk_s)
    store.flush()
    store.close()
    store = EdgeStore(folder, layout=layout)  # index with the layout's own thresholds
    index = store.open(corpus.checkpoint_version, dim)
    index.images.build_index()
    index.sentences.build_index()
    store.close()
    return time.perf_counter() - t0


def _allocated_bytes(folder: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())


# -- server ------------------------------------------------------------------------------------


def timed_queries(call: Any, requests: list[Any], load_s: float, clients: int = 8) -> dict:
    """One client in turn over `requests` (latency, answers), then `clients` threads for
    `load_s` seconds (throughput)."""
    call(requests[0])  # warm-up
    latencies, answers = [], []
    for request in requests:
        t0 = time.perf_counter()
        answers.append(call(request))
        latencies.append((time.perf_counter() - t0) * 1000)
    done = [0] * clients
    stop = time.perf_counter() + load_s

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            call(requests[i % len(requests)])
            done[k] += 1
            i += clients

    elapsed = run_clients(client, clients)
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "qps_8": sum(done) / elapsed,
        "answers": answers,
        "queries_timed": len(latencies),
    }


def recall(answers: list[list[str]], truth: list[set[int]], prefix: str) -> float:
    pairs = zip(answers, truth, strict=True)
    hits = [len({int(a[len(prefix) :]) for a in ans} & t) / K for ans, t in pairs]
    return float(np.mean(hits))


# -- runs --------------------------------------------------------------------------------------


def settings_for(quantization: str, candidates: list[int], pooled: int) -> list[Setting]:
    out = [Setting("two_stage", c, quantization, pooled) for c in candidates]
    if quantization == "none":
        out.insert(0, Setting("exact", 0, "none", pooled))
    return out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = load_or_build(images=args.corpus_images, checkpoint=Path(args.checkpoint))
    queries = corpus.query_text[: args.queries]
    query_words = corpus.query_words[: args.queries]
    sentence_queries = list(range(min(args.queries, len(corpus.regions))))
    query_regions = [corpus.regions[i].astype(np.float32) for i in sentence_queries]
    query_regions = [r / np.linalg.norm(r, axis=1, keepdims=True) for r in query_regions]
    candidates = [int(c) for c in args.candidates.split(",")]
    runs: list[dict[str, Any]] = []

    empty = workdir / "empty"
    build(empty, IndexLayout(), corpus, "realistic", 0, 0)
    server = Server(workdir, args.checkpoint, empty, config={"ranker": {"candidates": 100}})
    baseline_rss = (server.rss_bytes(), server.rss_bytes(("RssAnon",)))
    server.stop()

    for name in args.corpora.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            n_sentences = min(n, args.max_sentences) if name == "realistic" else 0
            print(f"[{name} {n}] ground truth", flush=True)
            truth_i = truth_images(_image_chunks(corpus, name, n), query_words)
            truth_s = (
                truth_sentences(expand_sentences(corpus, n_sentences, seed=0), query_regions)
                if n_sentences
                else []
            )
            for quantization in args.quantizations.split(","):
                folder = workdir / f"{name}-{n}-{quantization}"
                built = Setting("two_stage", 0, quantization, args.pooled_vectors)
                layout = StoreCfg(**built.store_cfg()).layout()
                print(f"[{name} {n} {quantization}] building", flush=True)
                build_s = build(folder, layout, corpus, name, n, n_sentences)
                disk = _allocated_bytes(folder)
                for setting in settings_for(quantization, candidates, args.pooled_vectors):
                    runs += measure(
                        args, workdir, folder, setting, name, n, n_sentences, build_s, disk,
                        baseline_rss, queries, truth_i, truth_s, sentence_queries,
                    )  # fmt: skip
                    _write(args, runs)
                shutil.rmtree(folder, ignore_errors=True)
    return runs


def measure(
    args: argparse.Namespace,
    workdir: Path,
    folder: Path,
    setting: Setting,
    name: str,
    n: int,
    n_sentences: int,
    build_s: float,
    disk: int,
    baseline_rss: tuple[int, int],
    queries: list[str],
    truth_i: list[set[int]],
    truth_s: list[set[int]],
    sentence_queries: list[int],
) -> list[dict[str, Any]]:
    candidates = setting.candidates or 100  # the exact scan ignores it
    server = Server(
        workdir,
        args.checkpoint,
        folder,
        setting.store_cfg(),
        {"ranker": {"candidates": candidates}},
    )
    common = {
        "corpus": name,
        "mode": setting.mode,
        "candidates": setting.candidates or None,
        "quantization": setting.quantization,
        "pooled_vectors": setting.pooled_vectors,
        "build_s": round(build_s, 1),
    }
    count = args.exact_queries if setting.mode == "exact" else len(queries)
    load = args.load_s if setting.mode != "exact" or n <= 10_000 else 0.0
    items = n + n_sentences

    def row(kind: str, timed: dict[str, Any], truth: list[set[int]], prefix: str) -> dict:
        out = {
            "kind": kind,
            "images": n,
            **({"sentences": n_sentences} if kind == "sentences" else {}),
            **common,
            **{k: round(v, 2) for k, v in timed.items() if k in ("p50_ms", "p99_ms", "qps_8")},
            "recall_at_10": round(recall(timed["answers"], truth[:count], prefix), 4),
            "ram_bytes_per_image": int((server.rss_bytes() - baseline_rss[0]) / items),
            "ram_anon_bytes_per_image": int(
                (server.rss_bytes(("RssAnon",)) - baseline_rss[1]) / items
            ),
            "disk_bytes_per_image": int(disk / items),
            "queries": timed["queries_timed"],
        }
        if not load:
            out["qps_8"] = None
        print(json.dumps(out), flush=True)
        return out

    def search(text: str) -> list[str]:
        reply = server.ranker.Search(rpb.SearchRequest(query=text, top_k=K), timeout=600)
        return [h.id for h in reply.hits]

    def sentences(image: int) -> list[str]:
        request = rpb.SearchSentencesRequest(image_id=f"img{image}", top_k=K)
        reply = server.ranker.SearchSentences(request, timeout=600)
        return [h.id for h in reply.hits]

    try:
        rows = [row("images", timed_queries(search, queries[:count], load), truth_i, "img")]
        if n_sentences:
            timed = timed_queries(sentences, sentence_queries[:count], load)
            rows.append(row("sentences", timed, truth_s, "sen"))
    finally:
        server.stop()
    return rows


def _write(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    out = Path(args.out)
    measured = {_run_key(r) for r in runs}
    kept: list[dict[str, Any]] = []
    if args.merge and out.exists():
        previous = json.loads(out.read_text())["runs"]
        kept = [r for r in previous if _run_key(r) not in measured]
    report = {
        "benchmark": "bench_scale",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "server": {"inference.torch_threads": TORCH_THREADS, "target": "all", "store": "edge"},
        "notes": (
            "ram_bytes_per_image: server RSS (anonymous + file-backed pages) less an empty "
            "server's, per stored item (images + sentences), ram_anon_bytes_per_image the "
            "anonymous part only; p50/p99: one client, text encoding included; "
            "qps_8: eight clients; recall_at_10 against exact MrSw over the same corpus"
        ),
        "runs": sorted(kept + runs, key=lambda r: (r["corpus"], r["images"], r["kind"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def _run_key(run: dict[str, Any]) -> tuple[str, int, int]:
    """What a new run replaces in a merged report (runs before `pooled_vectors` used 8)."""
    return run["corpus"], run["images"], run.get("pooled_vectors", 8)


def plot(report: Path, out: Path) -> None:
    """Latency and recall against collection size, one line per setting (realistic corpus)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in json.loads(report.read_text())["runs"] if r["corpus"] == "realistic"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for col, kind in enumerate(("images", "sentences")):
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if r["kind"] == kind:
                label = r["mode"] if r["mode"] == "exact" else f"C={r['candidates']}"
                label += "" if r["quantization"] == "none" else f" {r['quantization']}"
                pooled = r.get("pooled_vectors", 8)
                label += "" if r["mode"] == "exact" or pooled == 8 else f" k={pooled}"
                lines.setdefault(label, []).append(r)
        for label, rows in sorted(lines.items()):
            rows.sort(key=lambda r: r["images"])
            sizes = [r["images"] for r in rows]
            axes[0, col].plot(sizes, [r["p50_ms"] for r in rows], marker="o", label=label)
            axes[1, col].plot(sizes, [r["recall_at_10"] for r in rows], marker="o", label=label)
        title = "Search (sentence -> images)" if kind == "images" else "SearchSentences"
        axes[0, col].set_title(title)
        axes[0, col].set_ylabel("p50 latency, ms (one client)")
        axes[0, col].set_yscale("log")
        axes[1, col].set_ylabel("recall@10 of exact MrSw")
        axes[1, col].set_xlabel("stored items")
        axes[1, col].set_xscale("log")
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = run(args)
    _write(args, runs)
    plot(Path(args.out), Path(args.plot))
    print(f"wrote {args.out} ({len(runs)} runs) and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
