"""Where two-stage recall goes as the collection grows: the pooled first stage, brute force.

`make bench-scale` measured recall@10 of two-stage Search falling from 0.95 at 10k images to
0.61 at 100k (C = 100 candidates, int8). Two things could lose it: the HNSW index over the pooled
multivectors (an approximate search), or the pooled representation itself (8 k-means centroids
of an image's 49 regions, `services.store.layout.pool`). This computes the pooled first stage
exactly (every query against every image's centroids, no index), re-ranks its top C by exact
MrSw and reports recall@10 against exact MrSw over the whole collection: the best any index over
that representation can reach. Where it equals the served figure, the index loses nothing and
only a better representation (or more candidates) raises recall.

Per size it also reports how crowded the top of the ranking is (how many images score within
0.01 / 0.05 of the 10th best; MrSw of a top-10 image is ~1.6) and the known-item rank: where
the image a query caption was written for lands under exact MrSw.

`python -m benchmarks.scale_pooled` writes `benchmarks/results/scale-pooled.json`
(about 15 minutes for 100k images on the 2-core machine, peak RSS ~3 GB).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.scale_corpus import expand_images, load_or_build, max_sims
from services.store.layout import pool

CANDIDATES = (50, 100, 200, 400, 800, 1600)
CHUNK = 1000


def _max_sim(sets: np.ndarray, flat: np.ndarray, owner: torch.Tensor, q: int) -> torch.Tensor:
    """[Q, B]: for each query, the sum over its words of the best vector of each set [B, K, D]."""
    best = torch.from_numpy(max_sims(sets, flat))  # [B, V]
    return torch.zeros(q, len(sets)).index_add_(0, owner, best.T)


def _recall(exact: torch.Tensor, first: torch.Tensor, truth: torch.Tensor, c: int) -> float:
    cand = first.topk(min(c, first.shape[1]), dim=1).indices
    found = cand.gather(1, exact.gather(1, cand).topk(10, dim=1).indices)
    return float((found[:, :, None] == truth[:, None, :]).any(-1).sum(1).float().mean() / 10)


def study(sizes: list[int], queries: int, pooled: list[int]) -> dict[str, Any]:
    corpus = load_or_build()
    words = [corpus.query_words[i].astype(np.float32) for i in range(queries)]
    flat = np.concatenate(words)
    owner = torch.from_numpy(np.repeat(np.arange(queries), [len(w) for w in words]))
    assert corpus.query_image is not None
    own = torch.from_numpy(corpus.query_image[:queries])
    exact_cols: list[torch.Tensor] = []
    first_cols: dict[int, list[torch.Tensor]] = {k: [] for k in pooled}
    out: dict[str, Any] = {}
    seen, t0 = 0, time.perf_counter()
    for chunk in expand_images(corpus, max(sizes), chunk=CHUNK):
        exact_cols.append(_max_sim(chunk, flat, owner, queries))
        for k in pooled:
            centroids = np.stack([pool(image, k) for image in chunk])
            first_cols[k].append(_max_sim(centroids, flat, owner, queries))
        seen += len(chunk)
        if seen not in sizes:
            continue
        exact = torch.cat(exact_cols, 1)
        top = exact.topk(10, dim=1)
        tenth = top.values[:, -1:]
        own_rank = (exact > exact.gather(1, own[:, None])).sum(1).float()
        out[str(seen)] = {
            "items": seen,
            "queries": queries,
            "recall_at_10": {
                f"pooled-{k}": {
                    str(c): _recall(exact, torch.cat(cols, 1), top.indices, c) for c in CANDIDATES
                }
                for k, cols in first_cols.items()
            },
            "within_0.01_of_10th_median": float((exact >= tenth - 0.01).sum(1).float().median()),
            "within_0.05_of_10th_median": float((exact >= tenth - 0.05).sum(1).float().median()),
            "tenth_score_median": float(tenth.median()),
            "known_item_rank_median": float(own_rank.median()),
            "known_item_in_top_10": float((own_rank < 10).float().mean()),
        }
        print(f"  {seen} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="10000,20000,100000", help="multiples of 1000")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--pooled", default="8,16", help="centroids per image")
    p.add_argument("--out", default="benchmarks/results/scale-pooled.json")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = study(sizes, args.queries, [int(k) for k in args.pooled.split(",")])
    report = {
        "benchmark": "scale-pooled",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "sizes": results,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
