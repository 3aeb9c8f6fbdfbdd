"""Offline study of first stages for two-stage search: which vector proposes candidates well?

Search at scale will be two-stage: a sublinear first stage proposes C candidates, exact MrSw
re-ranks them. This measures, on the realistic scale corpus (`benchmarks.scale_corpus`: real
encoder output of the demo model, N real images and their expansion), recall@10 of the two-stage
top 10 against the exact top 10 by MrSw over the whole collection. Every first stage is computed
exactly (brute force), so the figures are the upper bound an HNSW index over that vector reaches.

Text -> images (query: a held-out caption's words; stored: images' 49 region vectors):

- `mean`: the image's mean region vector, renormalised, against the query's mean word vector,
  renormalised (one 256-d vector per image).
- `sum-raw`: the image's mean region vector as it is (not renormalised) against the sum of the
  query's words: the mean over regions of the summed word similarities.
- `muvera-*`: fixed-dimensional encodings (Dhulipala et al. 2024, arXiv 2405.19504), `Muvera`
  below; queries sum their vectors per SimHash partition, documents average theirs and fill
  empty partitions with the vector nearest in Hamming distance.
- `gather-k`: ColBERT v1's candidate generation: for each query word its k nearest regions over
  all stored regions; candidates are the union of their images (a variable number, reported).
  Measured on the first 100 queries (sorting every word's regions is the slow part here).

Image -> sentences (query: a corpus image's 49 regions; stored: sentences' word sets; exact
score MrSw(image, sentence) = sum over the sentence's words of the best region): `mean`,
`sum-raw` (sentence: sum of words, image: raw mean of regions) and MUVERA with the roles the
score gives: the stored sentences are the summed side (query-style encoding) and the image the
averaged, filled side (document-style), since the sum runs over sentence words and the max over
image regions.

Also: the first-stage vector's size (bytes per stored item at float32) and the time per query of
the exact numpy re-rank of C candidates (gathering their vectors included).
`python -m benchmarks.scale_study` writes `benchmarks/results/scale-study.json` (23 minutes on
the 2-core machine beside another job, peak RSS 3.0 GB with the corpus loaded).

What it found on the demo model's vectors (500 text queries, 200 image queries): no single-vector
first stage comes near recall@10 = 0.95 at C <= 1600. Text -> images at 20k / 100k, C = 1600:
MUVERA without projection (k_sim 2, 4 x 4 x 256 = 4096-d) 0.875 / 0.704, mean of regions vs
sum of words 0.758 / 0.590, mean vs mean 0.626 / 0.468; gather-256 0.793 with ~1,600 candidates
/ 0.531 with ~2,300. Image -> sentences is worse (the exact score sums over the stored side's
words, which a pooled sentence vector cannot order): best MUVERA (k_sim 5, projection 8, 16
repetitions) 0.744 / 0.312, mean vs mean 0.591 / 0.064. The sentence figures at 100k barely
move with the expansion's word noise (0.312 at 0.15, 0.315 at 0.05).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.scale_corpus import (
    DONORS,
    NOISE,
    P_CELL,
    P_WORD,
    WORD_NOISE,
    ScaleCorpus,
    expand_images,
    expand_sentences,
    load_or_build,
    pad_sets,
)

CANDIDATES = (50, 100, 200, 400, 800, 1600)
GATHER_K = (16, 64, 256)
MUVERA = (  # (k_sim, dim_proj or None, r_reps)
    (3, 16, 8),
    (4, 16, 8),
    (4, 16, 16),
    (5, 8, 16),
    (2, None, 4),
)
CHUNK = 250
"""Items per streamed chunk; corpus sizes must be multiples of it."""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Muvera:
    """MUVERA fixed-dimensional encodings in numpy: r_reps repetitions of a SimHash partition
    into 2**k_sim buckets, each bucket's (optionally projected) vectors summed (query side) or
    averaged with empty buckets filled by the Hamming-nearest vector (document side)."""

    def __init__(self, dim: int, k_sim: int, dim_proj: int | None, r_reps: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.k_sim, self.r_reps, self.buckets = k_sim, r_reps, 2**k_sim
        self.planes = rng.standard_normal((r_reps, dim, k_sim)).astype(np.float32)
        self.proj = (
            None
            if dim_proj is None
            else (rng.choice([-1.0, 1.0], (r_reps, dim, dim_proj)) / np.sqrt(dim_proj)).astype(
                np.float32
            )
        )
        self.width = dim if dim_proj is None else dim_proj
        b = np.arange(self.buckets)
        self.hamming = np.array([[bin(int(x ^ y)).count("1") for y in b] for x in b], dtype=np.int8)
        self.name = f"muvera-k{k_sim}-p{dim_proj or dim}-r{r_reps}"

    @property
    def dim(self) -> int:
        return self.r_reps * self.buckets * self.width

    def encode(self, sets: np.ndarray, mask: np.ndarray, document: bool) -> np.ndarray:
        """[B, L, D] padded vector sets with a [B, L] mask -> [B, dim] float32."""
        batch, length = mask.shape
        planes = self.planes.transpose(1, 0, 2).reshape(sets.shape[-1], -1)
        bits = (sets @ planes > 0).reshape(batch, length, self.r_reps, self.k_sim)
        ids = bits.astype(np.int64) @ (1 << np.arange(self.k_sim))  # [B, L, reps]
        if self.proj is not None:
            proj = self.proj.transpose(1, 0, 2).reshape(sets.shape[-1], -1)
            ys = (sets @ proj).reshape(batch, length, self.r_reps, self.width)
        out = []
        for r in range(self.r_reps):
            y = sets if self.proj is None else ys[:, :, r]  # [B, L, w]
            onehot = (ids[:, :, r, None] == np.arange(self.buckets)) & mask[..., None]
            block = onehot.astype(np.float32).transpose(0, 2, 1) @ y  # [B, P, w]
            if document:
                counts = onehot.sum(1)  # [B, P]
                block /= np.maximum(counts, 1)[..., None]
                empty = counts == 0
                if empty.any():
                    dist = self.hamming[ids[:, :, r]]  # [B, L, P]
                    dist[~mask] = 127
                    nearest = dist.argmin(1)  # [B, P]
                    rows = np.broadcast_to(np.arange(batch)[:, None], nearest.shape)
                    block[empty] = y[rows[empty], nearest[empty]]
            out.append(block.reshape(batch, -1))
        return np.concatenate(out, axis=1)


class TopK:
    """A running top-`k` per query of first-stage scores over streamed items."""

    def __init__(self, queries: int, k: int) -> None:
        self.k = k
        self.values = torch.full((queries, 0), -torch.inf)
        self.ids = torch.zeros((queries, 0), dtype=torch.int64)

    def update(self, scores: torch.Tensor, offset: int) -> None:
        ids = torch.arange(offset, offset + scores.shape[1]).expand_as(scores)
        values = torch.cat([self.values, scores], 1)
        ids = torch.cat([self.ids, ids], 1)
        top = values.topk(min(self.k, values.shape[1]), dim=1)
        self.values, self.ids = top.values, ids.gather(1, top.indices)

    def copy(self) -> TopK:
        out = TopK(0, self.k)
        out.values, out.ids = self.values.clone(), self.ids.clone()
        return out


def _recall(exact: torch.Tensor, ids: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean recall@10 of re-ranking candidates `ids` [Q, C] by `exact` [Q, n]."""
    rerank = exact.gather(1, ids).topk(min(10, ids.shape[1]), dim=1).indices
    found = ids.gather(1, rerank)
    hits = (found[:, :, None] == truth[:, None, :]).any(-1).sum(1)
    return float(hits.float().mean() / 10)


@dataclass
class Snapshot:
    tops: dict[str, TopK]
    gather: torch.Tensor | None
    """[V, K] ids of the stored vectors nearest each gathering query vector, or None."""


def _study(
    chunks: Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]],
    queries: int,
    sizes: Sequence[int],
    gather_owner: torch.Tensor | None,
    gather_item: Any,
) -> dict[str, Any]:
    """Stream (exact [Q, B], first-stage scores {name: [Q, B]}, the running gather ids or None)
    over the items; snapshot every size; recall@10 per first stage and C at each size."""
    exact_cols: list[torch.Tensor] = []
    tops: dict[str, TopK] = {}
    gather_i: torch.Tensor | None = None
    snaps: dict[int, Snapshot] = {}
    seen = 0
    t0 = time.perf_counter()
    for exact, stage, gathered in chunks:
        for name, scores in stage.items():
            tops.setdefault(name, TopK(queries, max(CANDIDATES))).update(scores, seen)
        gather_i = gathered
        exact_cols.append(exact)
        seen += exact.shape[1]
        if seen in sizes:
            snaps[seen] = Snapshot({k: v.copy() for k, v in tops.items()}, gather_i)
            print(f"  {seen} items streamed ({time.perf_counter() - t0:.0f} s)", flush=True)
    full = torch.cat(exact_cols, 1)
    out: dict[str, Any] = {}
    for size, snap in snaps.items():
        exact = full[:, :size]
        truth = exact.topk(10, dim=1).indices
        res: dict[str, Any] = {"items": size, "queries": queries, "first_stages": {}}
        for name, running in snap.tops.items():
            res["first_stages"][name] = {
                str(c): _recall(exact, running.ids[:, :c], truth) for c in CANDIDATES
            }
        if snap.gather is not None and gather_owner is not None:
            gathering = int(gather_owner.max()) + 1
            for k in GATHER_K:
                recalls, counts = [], []
                for q in range(gathering):
                    rows = snap.gather[gather_owner == q, :k].flatten()
                    cands = torch.unique(gather_item(rows))
                    counts.append(len(cands))
                    recalls.append(_recall(exact[q : q + 1], cands[None], truth[q : q + 1]))
                res["first_stages"][f"gather-{k}"] = {
                    "queries": gathering,
                    "recall": float(np.mean(recalls)),
                    "candidates_mean": float(np.mean(counts)),
                    "candidates_p90": float(np.quantile(counts, 0.9)),
                }
        out[str(size)] = res
    return out


def text_to_images(
    corpus: ScaleCorpus,
    sizes: Sequence[int],
    queries: int,
    muveras: Sequence[Muvera],
    gather_queries: int = 100,
) -> dict[str, Any]:
    words = [corpus.query_words[i] for i in range(min(queries, len(corpus.query_words)))]
    q = len(words)
    flat = torch.from_numpy(np.concatenate(words))
    owner = torch.from_numpy(np.repeat(np.arange(q), [len(w) for w in words]))
    gather_words = sum(len(w) for w in words[:gather_queries])
    q_mean = torch.from_numpy(_unit(np.stack([w.mean(0) for w in words])))
    q_sum = torch.from_numpy(np.stack([w.sum(0) for w in words]))
    padded, mask = pad_sets(words)
    q_fde = {m.name: torch.from_numpy(m.encode(padded, mask, document=False)) for m in muveras}
    regions = corpus.regions.shape[1]
    keep = max(GATHER_K)

    def chunks() -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], Any]]:
        seen = 0
        top_v = torch.full((gather_words, 0), -torch.inf)
        top_i = torch.zeros((gather_words, 0), dtype=torch.int64)
        for x_np in expand_images(corpus, max(sizes), chunk=CHUNK):
            x = torch.from_numpy(x_np)
            sims = x.reshape(-1, x.shape[-1]) @ flat.T  # [B*R, V]
            best = sims.view(len(x), regions, -1).amax(1)  # [B, V]
            exact = torch.zeros(q, len(x)).index_add_(0, owner, best.T)
            # gather: each of the first queries' words keeps its `keep` best regions so far;
            # only as many of this chunk's as beat the current last one need sorting
            vals = sims[:, :gather_words].T.contiguous()  # [Vg, B*R]
            floor = top_v[:, -1:] if top_v.shape[1] == keep else None
            k = keep if floor is None else int((vals > floor).sum(1).max())
            if k:
                new = vals.topk(min(k, vals.shape[1]), dim=1)
                both_v = torch.cat([top_v, new.values], 1)
                both_i = torch.cat([top_i, new.indices + seen * regions], 1)
                best_k = both_v.topk(min(keep, both_v.shape[1]), dim=1)
                top_v, top_i = best_k.values, both_i.gather(1, best_k.indices)
            mean = x.mean(1)
            stage = {
                "mean": q_mean @ torch.nn.functional.normalize(mean, dim=-1).T,
                "sum-raw": q_sum @ mean.T,
            }
            ones = np.ones(x_np.shape[:2], dtype=bool)
            for m in muveras:
                stage[m.name] = q_fde[m.name] @ torch.from_numpy(m.encode(x_np, ones, True)).T
            seen += len(x)
            yield exact, stage, top_i

    return _study(chunks(), q, sizes, owner[:gather_words], lambda rows: rows // regions)


def images_to_sentences(
    corpus: ScaleCorpus,
    sizes: Sequence[int],
    image_queries: int,
    muveras: Sequence[Muvera],
    word_noise: float = WORD_NOISE,
) -> dict[str, Any]:
    n = len(corpus.regions)
    picks = np.sort(np.random.default_rng(0).choice(n, size=min(image_queries, n), replace=False))
    images = _unit(corpus.regions[picks].astype(np.float32))  # [Q, R, D]
    q, regions = len(images), images.shape[1]
    flat_q = torch.from_numpy(images.reshape(-1, images.shape[-1]))
    i_mean = images.mean(1)
    i_unit = torch.from_numpy(_unit(i_mean))
    i_raw = torch.from_numpy(i_mean)
    ones = np.ones(images.shape[:2], dtype=bool)
    i_fde = {m.name: torch.from_numpy(m.encode(images, ones, document=True)) for m in muveras}

    def chunks() -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], Any]]:
        expanded = expand_sentences(corpus, max(sizes), chunk=CHUNK, noise=word_noise)
        for sentences in expanded:
            padded, mask = pad_sets(sentences)
            words = torch.from_numpy(padded[mask])  # [V, D]
            owner = torch.from_numpy(np.repeat(np.arange(len(sentences)), mask.sum(1)))
            best = torch.cat(
                [(w @ flat_q.T).view(len(w), q, regions).amax(-1) for w in words.split(4096)]
            )  # [V, Q]
            exact = torch.zeros(len(sentences), q).index_add_(0, owner, best).T
            s_sum = torch.from_numpy(padded.sum(1))
            stage = {
                "mean": i_unit @ torch.nn.functional.normalize(s_sum, dim=-1).T,
                "sum-raw": i_raw @ s_sum.T,
            }
            for m in muveras:
                fde = torch.from_numpy(m.encode(padded, mask, document=False))
                stage[m.name] = i_fde[m.name] @ fde.T
            yield exact.contiguous(), stage, None

    out = _study(chunks(), q, sizes, None, None)
    out["query_images"] = picks.tolist()
    return out


def rerank_ms(corpus: ScaleCorpus, trials: int = 20) -> dict[str, dict[str, float]]:
    """Median time per query of the exact numpy re-rank of C candidates held as float32
    (gathering their rows from the float32 arrays included)."""
    rng = np.random.default_rng(0)
    pool = corpus.regions[: min(len(corpus.regions), 4000)].astype(np.float32)
    n = len(pool)
    out: dict[str, dict[str, float]] = {"text_to_images": {}, "images_to_sentences": {}}
    for c in CANDIDATES:
        t_img, t_sent = [], []
        for t in range(trials):
            ids = rng.choice(n, size=min(c, n), replace=False)
            words = corpus.query_words[t % len(corpus.query_words)]
            t0 = time.perf_counter()
            x = pool[ids]
            sims = (x.reshape(-1, x.shape[-1]) @ words.T).reshape(len(ids), x.shape[1], -1)
            np.argsort(-sims.max(1).sum(-1))[:10]
            t_img.append(time.perf_counter() - t0)
            image = pool[ids[0]]
            t0 = time.perf_counter()
            padded, mask = pad_sets([corpus.sentence_words[i] for i in ids])
            best = (padded @ image.T).max(-1)
            np.argsort(-(best * mask).sum(-1))[:10]
            t_sent.append(time.perf_counter() - t0)
        out["text_to_images"][str(c)] = 1000 * float(np.median(t_img))
        out["images_to_sentences"][str(c)] = 1000 * float(np.median(t_sent))
    return out


def dims(muveras: Sequence[Muvera], dim: int) -> dict[str, int]:
    out = {"mean": dim, "sum-raw": dim}
    out.update({m.name: m.dim for m in muveras})
    return out


def table(results: dict[str, Any]) -> str:
    lines = []
    cs = [str(c) for c in CANDIDATES]
    for direction in ("text_to_images", "images_to_sentences"):
        for size, res in results.get(direction, {}).items():
            if not size.isdigit():
                continue
            lines.append(f"\n{direction}, {size} items, {res['queries']} queries: recall@10")
            lines.append(
                "| first stage | dim | " + " | ".join(f"C={c}" for c in cs) + " |\n|"
                + "---|" * (len(cs) + 2)
            )  # fmt: skip
            for name, rec in res["first_stages"].items():
                if name.startswith("gather"):
                    cells = (
                        f"{rec['recall']:.3f} with {rec['candidates_mean']:.0f} candidates"
                        f" (p90 {rec['candidates_p90']:.0f})"
                    )
                    lines.append(f"| {name} | - | {cells} |")
                else:
                    dim = results["dims"][name]
                    lines.append(
                        f"| {name} | {dim} | " + " | ".join(f"{rec[c]:.3f}" for c in cs) + " |"
                    )
    ms = results["rerank_ms"]
    lines.append("\nexact numpy re-rank, ms per query")
    lines.append("| direction | " + " | ".join(f"C={c}" for c in cs) + " |\n|" + "---|" * 7)
    for direction, row in ms.items():
        lines.append(f"| {direction} | " + " | ".join(f"{row[c]:.2f}" for c in cs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--images", type=int, default=20_000, help="real corpus size N")
    p.add_argument("--sizes", default="20000,100000", help="collection sizes (multiples of 250)")
    p.add_argument("--queries", type=int, default=500, help="text queries")
    p.add_argument("--image-queries", type=int, default=200)
    p.add_argument("--cache", default=".cache/teran/scale")
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--directions", default="text_to_images,images_to_sentences")
    p.add_argument("--word-noise", type=float, default=WORD_NOISE, help="sentence expansion")
    p.add_argument("--out", default="benchmarks/results/scale-study.json")
    args = p.parse_args(argv)
    directions = args.directions.split(",")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    assert all(s % CHUNK == 0 for s in sizes), f"sizes must be multiples of {CHUNK}"
    t0 = time.perf_counter()
    corpus = load_or_build(Path(args.cache), args.images, Path(args.checkpoint))
    dim = corpus.regions.shape[-1]
    muveras = [Muvera(dim, k, proj, r, seed=0) for k, proj, r in MUVERA]
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "corpus": {
            "real_images": len(corpus.regions),
            "regions_per_image": corpus.regions.shape[1],
            "dim": dim,
            "model_version": corpus.checkpoint_version,
            "expansion": {
                "p_cell": P_CELL,
                "donors": DONORS,
                "noise": NOISE,
                "p_word": P_WORD,
                "word_noise": args.word_noise,
                "seed": 0,
            },
        },
        "dims": dims(muveras, dim),
        "bytes_per_item_f32": {k: 4 * v for k, v in dims(muveras, dim).items()},
    }
    if "text_to_images" in directions:
        print(f"text -> images over {sizes}", flush=True)
        results["text_to_images"] = text_to_images(corpus, sizes, args.queries, muveras)
    if "images_to_sentences" in directions:
        print(f"image -> sentences over {sizes}", flush=True)
        results["images_to_sentences"] = images_to_sentences(
            corpus, sizes, args.image_queries, muveras, args.word_noise
        )
    results["rerank_ms"] = rerank_ms(corpus)
    results["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
