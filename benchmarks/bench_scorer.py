"""Throughput of the exact alignment scorer against the reference's evaluation-style scoring.

Scoring every image against every caption dominates offline evaluation and index builds, and the
scorer's design (one GEMM per chunk of images x captions, masked max and sum) is justified by speed
as well as exactness. This script measures, on the same tensors in one run:

(a) `teran.alignment.alignment_scores` on all images x all captions;
(b) the original TERAN evaluation's way: one image query at a time, expanded against all captions
    and matmul'd, zero-filled, max over regions, sum over words;
(c) the machine's plain float32 matmul throughput, to say how close (a) gets to the hardware.

Run from the repository root: `python -m benchmarks.bench_scorer` (or `python
benchmarks/bench_scorer.py`). Results are printed and written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from teran.alignment import DEFAULT_MAX_CELLS, AlignmentMode, alignment_scores

_T = TypeVar("_T")

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scorer.json"
MIN_WORDS, MAX_WORDS = 8, 20
DIFF_ATOL = 1e-4
"""Cells whose |exact - reference-style| exceeds this are counted as differing."""


def _unit_normal(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    x = torch.randn(shape, generator=gen, dtype=torch.float32)
    return torch.nn.functional.normalize(x, dim=-1)


def make_inputs(
    n_images: int, n_captions: int, n_regions: int, dim: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random L2-normalised regions [I, R, D] and words [C, W, D] with their validity masks.

    Every image has all `n_regions` regions (bottom-up features come in fixed sets of 36); each
    caption has a word count drawn uniformly in [MIN_WORDS, MAX_WORDS], padded to the longest.
    """
    gen = torch.Generator().manual_seed(seed)
    regions = _unit_normal((n_images, n_regions, dim), gen)
    region_mask = torch.ones(n_images, n_regions, dtype=torch.bool)
    lengths = torch.randint(MIN_WORDS, MAX_WORDS + 1, (n_captions,), generator=gen)
    n_words = int(lengths.max()) if n_captions else MAX_WORDS
    words = _unit_normal((n_captions, n_words, dim), gen)
    word_mask = torch.arange(n_words)[None, :] < lengths[:, None]
    return regions, region_mask, words, word_mask


def reference_style_scores(
    regions: Tensor, region_mask: Tensor, words: Tensor, word_mask: Tensor
) -> Tensor:
    """MrSw scores [I, C], one image query at a time, as the original TERAN evaluation does.

    Mirrors the reference's per-query expand-and-matmul: its `evaluation.i2t` loop scores each
    image alone against all captions with `AlignmentContrastiveLoss(return_similarity_mat=True)`,
    which expands the image to [1, C, R, D] and the captions to [1, C, W, D], matmuls them into
    [1, C, R, W] alignments, zero-fills cells of padded regions or words, then takes the max over
    regions and the sum over words.
    """
    n_cap, n_word, _ = words.shape
    n_reg = regions.shape[1]
    s_seq = words.unsqueeze(0)  # 1 x C x W x D
    s_pad = (~word_mask).unsqueeze(1).unsqueeze(0).expand(1, -1, n_reg, -1)  # 1 x C x R x W
    rows = []
    for q in range(regions.shape[0]):
        im_set = regions[q : q + 1].unsqueeze(1).expand(-1, n_cap, -1, -1)  # 1 x C x R x D
        alignments = torch.matmul(im_set, s_seq.permute(0, 1, 3, 2))  # 1 x C x R x W
        im_pad = (~region_mask[q : q + 1]).unsqueeze(2).unsqueeze(1)
        alignments.masked_fill_(im_pad.expand(-1, n_cap, -1, n_word) | s_pad, 0.0)
        rows.append(alignments.max(dim=2)[0].sum(dim=2))  # 1 x C
    return torch.cat(rows, dim=0)


def _median_seconds(fn: Callable[[], _T], repeats: int) -> tuple[float, list[float], _T]:
    """Median wall seconds over `repeats` calls of `fn`, every call's seconds, the last result."""
    times = []
    result: _T | None = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), times, result


def matmul_gflops(size: int, repeats: int) -> tuple[float, float]:
    """Median seconds and GFLOP/s of a square float32 `torch.mm` of side `size`."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    torch.mm(a, b)  # warm-up
    seconds, _, _ = _median_seconds(lambda: torch.mm(a, b), repeats)
    return seconds, 2.0 * size**3 / seconds / 1e9


def machine_info() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "processor": platform.processor(),
        "uname": {
            "system": uname.system,
            "release": uname.release,
            "version": uname.version,
            "machine": uname.machine,
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--captions", type=int, default=1000)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method; median reported")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--ref-images",
        type=int,
        default=None,
        help="time the reference-style scoring on the first N image queries only and "
        "extrapolate linearly to all images (default: all)",
    )
    p.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, help="scorer chunk bound")
    p.add_argument("--mm-size", type=int, default=2048, help="side of the square matmul probe")
    p.add_argument("--mm-repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    args = p.parse_args(argv)
    for name in ("images", "captions", "regions", "dim", "repeats", "mm_size", "mm_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.ref_images is not None and args.ref_images < 1:
        p.error("--ref-images must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # wide enough for the table when output is piped to a file or log
    console = Console() if sys.stdout.isatty() else Console(width=120)
    n_img, n_cap, n_reg, dim = args.images, args.captions, args.regions, args.dim
    n_ref = n_img if args.ref_images is None else min(args.ref_images, n_img)
    extrapolated = n_ref < n_img
    mode = AlignmentMode.MrSw

    regions, region_mask, words, word_mask = make_inputs(n_img, n_cap, n_reg, dim, args.seed)
    n_word = words.shape[1]
    flops = 2.0 * n_img * n_reg * n_cap * n_word * dim  # padded W: what the GEMMs compute
    console.print(
        f"images={n_img} captions={n_cap} regions={n_reg} dim={dim} padded_words={n_word} "
        f"mean_words={word_mask.sum(1).float().mean():.2f} threads={torch.get_num_threads()} "
        f"repeats={args.repeats}"
    )

    with torch.inference_mode():
        # (c) machine matmul throughput
        mm_s, mm_gflops = matmul_gflops(args.mm_size, args.mm_repeats)

        # (a) exact scorer, all images x all captions
        def run_scorer() -> Tensor:
            return alignment_scores(regions, region_mask, words, word_mask, mode, args.max_cells)

        alignment_scores(regions[:8], region_mask[:8], words, word_mask, mode, args.max_cells)
        scorer_s, scorer_runs, exact = _median_seconds(run_scorer, args.repeats)

        # (b) reference-style, first n_ref image queries
        ref_regions, ref_mask = regions[:n_ref], region_mask[:n_ref]

        def run_reference() -> Tensor:
            return reference_style_scores(ref_regions, ref_mask, words, word_mask)

        reference_style_scores(regions[:2], region_mask[:2], words, word_mask)  # warm-up
        ref_timed_s, ref_runs, ref_scores = _median_seconds(run_reference, args.repeats)

    # Agreement on the timed rows. The reference zero-fills cells of padded regions/words before
    # its max over regions: padded-word columns become all 0 and add 0 to the sum, as the exact
    # scorer's masking does. Only when a word's column also holds zero-filled *padded regions*
    # can the fill clamp that word's max at 0 (if all its real region scores are negative). With
    # all regions valid here, the two should agree to float32 rounding (~1e-5).
    diff = (exact[:n_ref] - ref_scores).abs()
    max_abs_diff = float(diff.max())
    n_differing = int((diff > DIFF_ATOL).sum())

    ref_s = ref_timed_s * n_img / n_ref
    speedup = ref_s / scorer_s
    scorer_gflops = flops / scorer_s / 1e9
    ref_gflops = flops / ref_s / 1e9

    ref_label = (
        f"reference-style ({n_ref}/{n_img} queries, extrapolated)"
        if extrapolated
        else "reference-style"
    )
    table = Table(title=f"MrSw scoring, {n_img} images x {n_cap} captions")
    table.add_column("method")
    table.add_column("median s", justify="right")
    table.add_column("GFLOP/s", justify="right")
    table.add_column("of matmul", justify="right")
    table.add_column("vs scorer", justify="right")
    table.add_row(
        "exact scorer (alignment_scores)",
        f"{scorer_s:.3f}",
        f"{scorer_gflops:.1f}",
        f"{scorer_gflops / mm_gflops:.1%}",
        "1.00x",
    )
    table.add_row(
        ref_label,
        f"{ref_s:.3f}",
        f"{ref_gflops:.1f}",
        f"{ref_gflops / mm_gflops:.1%}",
        f"{speedup:.2f}x slower",
    )
    table.add_row(
        f"torch.mm {args.mm_size}x{args.mm_size} fp32",
        f"{mm_s:.4f}",
        f"{mm_gflops:.1f}",
        "100%",
        "",
    )
    console.print(table)
    if extrapolated:
        console.print(
            f"reference-style time EXTRAPOLATED linearly: {ref_timed_s:.3f} s measured on the "
            f"first {n_ref} image queries x {n_img / n_ref:.2f}"
        )
    console.print(
        f"speed ratio (reference-style / scorer): {speedup:.2f}x; agreement on {n_ref} rows: "
        f"max |a-b| = {max_abs_diff:.2e}, cells differing by > {DIFF_ATOL:g}: {n_differing}"
    )

    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "images": n_img,
            "captions": n_cap,
            "regions": n_reg,
            "dim": dim,
            "padded_words": n_word,
            "words_range": [MIN_WORDS, MAX_WORDS],
            "seed": args.seed,
            "repeats": args.repeats,
            "mode": str(mode),
            "max_cells": args.max_cells,
        },
        "scorer": {
            "median_s": scorer_s,
            "runs_s": scorer_runs,
            "gflops": scorer_gflops,
            "fraction_of_matmul": scorer_gflops / mm_gflops,
            "flops": flops,
        },
        "reference_style": {
            "median_s": ref_s,
            "extrapolated": extrapolated,
            "timed_queries": n_ref,
            "timed_median_s": ref_timed_s,
            "timed_runs_s": ref_runs,
            "gflops": ref_gflops,
            "fraction_of_matmul": ref_gflops / mm_gflops,
        },
        "speed_ratio_reference_over_scorer": speedup,
        "agreement": {
            "rows": n_ref,
            "max_abs_diff": max_abs_diff,
            "atol": DIFF_ATOL,
            "cells_differing": n_differing,
        },
        "matmul": {
            "size": args.mm_size,
            "repeats": args.mm_repeats,
            "median_s": mm_s,
            "gflops": mm_gflops,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
