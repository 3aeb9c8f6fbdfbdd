"""`make bench-quality`: does fine-grained alignment beat a single global embedding?

On the synthetic compositional scenes (teran.data.synthetic) the test images come in groups that
differ mainly by which colour goes with which shape and where things are, so a caption's bag of
words matches several images. Every variant is trained by the project's own trainer with the
same backbones, data, budget and seed; only the objective/score differs:

- TERAN MrSw, MwSr, symm (the paper's alignment modes), and
- a VSE++-style baseline: hinge loss with hardest negatives on the cosine of the aggregated
  vectors (image CLS slot, sentence [CLS]) of the same architecture.

Each is evaluated on the 1,000-image synthetic test split with the paper's protocol (R@1/5/10
both ways, rsum, NDCG@25 with ROUGE-L relevance). All numbers are on SYNTHETIC data.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from teran.checkpoint import load_checkpoint
from teran.evaluation import evaluate_model
from teran.factory import get_model_config
from teran.relevance import Relevance, compute_rouge_relevance, load_relevance, save_relevance
from trainer import main as train_main
from trainer.data import synthetic_split

VARIANTS = ("MrSw", "MwSr", "symm", "global")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="teran-minilm-tiny")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=500)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="default: the config's recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=".cache/teran")
    p.add_argument("--runs", default="benchmarks/runs/quality")
    p.add_argument("--out", default="benchmarks/results/quality.json")
    return p.parse_args(argv)


def rouge_relevance(captions: list[str], path: Path) -> Relevance:
    """ROUGE-L relevance of the test captions, computed once and kept beside the features."""
    if not path.is_file():
        save_relevance(path, compute_rouge_relevance(captions))
    return Relevance({"rougeL": load_relevance(path, len(captions))})


def row(name: str, metrics: dict[str, Any], seconds: float) -> str:
    i2t, t2i = metrics["i2t"], metrics["t2i"]
    cells = [
        name,
        *(f"{i2t[k]:.1f}" for k in ("r1", "r5", "r10")),
        *(f"{t2i[k]:.1f}" for k in ("r1", "r5", "r10")),
        f"{metrics['rsum']:.1f}",
        f"{i2t['ndcg_rougeL']:.3f}",
        f"{t2i['ndcg_rougeL']:.3f}",
        f"{seconds / 60:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cfg = get_model_config(args.model)
    test = synthetic_split("test", args.test_images, args.seed, cfg, args.cache_dir, True)
    captions = [c for i in range(len(test)) for c in test.captions(i)]
    relevance = rouge_relevance(captions, Path(test.folder) / "rougeL-relevance.f32")
    results: dict[str, Any] = {}
    for variant in args.variants.split(","):
        out = Path(args.runs) / variant
        t0 = time.perf_counter()
        train_args = [
            "--model", args.model, "--measure", variant, "--dataset", "synthetic",
            "--train-images", str(args.train_images), "--val-images", str(args.val_images),
            "--data-seed", str(args.seed), "--seed", str(args.seed),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--cache-dir", args.cache_dir, "--output", str(out),
        ]  # fmt: skip
        if args.lr is not None:
            train_args += ["--lr", str(args.lr)]
        train_main.main(train_args)
        train_seconds = time.perf_counter() - t0
        model, tokenizer = load_checkpoint(out / "best")
        result = evaluate_model(model, tokenizer, test, variant, relevance=relevance)
        results[variant] = {
            "metrics": result.metrics.to_dict(),
            "train_seconds": round(train_seconds, 1),
            "best_epoch": json.loads((out / "best" / "teran_config.json").read_text())["meta"][
                "epoch"
            ],
        }
        print(json.dumps({variant: results[variant]}))
    header = (
        "| variant (synthetic scenes) | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum "
        "| NDCG i2t | NDCG t2i | train min |\n|" + "---|" * 11
    )
    names = {"global": "VSE++-style global embedding (baseline)"}
    lines = [
        row(names.get(v, f"TERAN {v}"), r["metrics"], r["train_seconds"])
        for v, r in results.items()
    ]
    table = "\n".join([header, *lines])
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": "synthetic compositional scenes (teran.data.synthetic)",
        "machine": {
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.machine(),
        },
        "args": vars(args),
        "results": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "table": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(table)
    print(f"wall time {(time.perf_counter() - started) / 60:.1f} min; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
