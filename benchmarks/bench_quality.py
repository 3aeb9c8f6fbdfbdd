"""`make bench-quality`: does fine-grained alignment beat a single global embedding?

On the synthetic compositional scenes (teran.data.synthetic) the test images come in groups that
differ mainly by which colour goes with which shape and where things are, so a caption's bag of
words matches several images. Every variant is trained by the project's own trainer with the
named configuration's recipe, on the same cached region and backbone features, with the same
budget and seed; only the objective/score differs:

- TERAN MrSw, MwSr, symm (the paper's alignment modes), and
- a VSE++-style baseline: hinge loss on the cosine of the aggregated vectors (image CLS slot,
  sentence [CLS]) of the same architecture.

Each is evaluated on the 1,000-image synthetic test split with the paper's protocol (R@1/5/10
both ways, rsum, NDCG@25 with ROUGE-L relevance) and with pointing accuracy (teran.pointing:
whether each colour or shape word aligns to a region on the object it names). Validation rsum is
logged against training minutes, giving one learning curve per variant (JSON and PNG).
All numbers are on SYNTHETIC data.

`--variants MrSw` trains one variant and merges its result into an existing report, so no single
run has to train all four.
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
from teran.data.synthetic import SyntheticScenes
from teran.evaluation import evaluate_model
from teran.factory import get_model_config
from teran.pointing import evaluate_pointing, synthetic_targets
from teran.relevance import Relevance, compute_rouge_relevance, load_relevance, save_relevance
from trainer import main as train_main
from trainer.data import synthetic_split

VARIANTS = ("MrSw", "MwSr", "symm", "global")
NAMES = {"global": "VSE++-style global embedding (baseline)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="teran-minilm-tiny", help="named config (and its recipe)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=500)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, help="default: the config's recipe")
    p.add_argument("--time-budget", type=float, default=12.0, help="training minutes per variant")
    p.add_argument("--val-every-steps", type=int, default=156, help="learning-curve resolution")
    p.add_argument("--seed", type=int, default=0, help="test scenes; validation uses seed + 1")
    p.add_argument("--cache-dir", default=".cache/teran")
    p.add_argument("--runs", default="benchmarks/runs/quality")
    p.add_argument("--out", default="benchmarks/results/quality.json")
    p.add_argument("--plot", default="benchmarks/results/quality-curves.png")
    return p.parse_args(argv)


def rouge_relevance(captions: list[str], path: Path) -> Relevance:
    """ROUGE-L relevance of the test captions, computed once and kept beside the features."""
    if not path.is_file():
        save_relevance(path, compute_rouge_relevance(captions))
    return Relevance({"rougeL": load_relevance(path, len(captions))})


def learning_curve(run: Path) -> list[dict[str, float]]:
    """(training minutes, step, validation rsum) of every validation of a run."""
    out: list[dict[str, float]] = []
    for line in (run / "val.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val" in record and not (out and out[-1]["step"] == record["step"]):
            out.append(
                {
                    "minutes": record["train_minutes"],
                    "step": record["step"],
                    "rsum": record["val"]["rsum"],
                }
            )
    return out


def train_variant(args: argparse.Namespace, variant: str, out: Path) -> float:
    """Train one variant from scratch with the config's recipe; returns wall seconds."""
    t0 = time.perf_counter()
    train_args = [
        "--model", args.model, "--measure", variant, "--dataset", "synthetic",
        "--train-images", str(args.train_images), "--val-images", str(args.val_images),
        "--data-seed", str(args.seed), "--seed", str(args.seed),
        "--time-budget", str(args.time_budget), "--val-every-steps", str(args.val_every_steps),
        "--cache-dir", args.cache_dir, "--output", str(out), "--no-progress",
    ]  # fmt: skip
    if args.epochs is not None:
        train_args += ["--epochs", str(args.epochs)]
    for stale in ("val.jsonl", "train_state.pt"):
        (out / stale).unlink(missing_ok=True)
    train_main.main(train_args)
    return time.perf_counter() - t0


def row(name: str, result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    i2t, t2i = metrics["i2t"], metrics["t2i"]
    cells = [
        name,
        *(f"{i2t[k]:.1f}" for k in ("r1", "r5", "r10")),
        *(f"{t2i[k]:.1f}" for k in ("r1", "r5", "r10")),
        f"{metrics['rsum']:.1f}",
        f"{i2t['ndcg_rougeL']:.3f}",
        f"{t2i['ndcg_rougeL']:.3f}",
        f"{100 * result['pointing']['accuracy']:.1f}",
        f"{result['train_minutes']:.1f}",
        str(result["steps"]),
    ]
    return "| " + " | ".join(cells) + " |"


def table(results: dict[str, Any]) -> str:
    header = (
        "| variant (synthetic scenes) | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum "
        "| NDCG i2t | NDCG t2i | pointing % | train min | steps |\n|" + "---|" * 13
    )
    ordered = [v for v in VARIANTS if v in results]
    lines = [row(NAMES.get(v, f"TERAN {v}"), results[v]) for v in ordered]
    return "\n".join([header, *lines])


def plot(results: dict[str, Any], path: Path) -> None:
    """Validation rsum against training minutes, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for variant in (v for v in VARIANTS if v in results):
        curve = results[variant]["curve"]
        ax.plot(
            [p["minutes"] for p in curve],
            [p["rsum"] for p in curve],
            marker=".",
            label=NAMES.get(variant, f"TERAN {variant}"),
        )
    ax.set_xlabel("training minutes (2-core CPU, validation excluded)")
    ax.set_ylabel("validation rsum (of 600)")
    ax.set_title("Learning curves on synthetic scenes (500 confusable validation scenes)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cfg = get_model_config(args.model)
    test = synthetic_split("test", args.test_images, args.seed, cfg, args.cache_dir, True)
    scenes = test.source
    assert isinstance(scenes, SyntheticScenes)
    captions = [c for i in range(len(test)) for c in test.captions(i)]
    relevance = rouge_relevance(captions, Path(test.folder) / "rougeL-relevance.f32")
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    # a partial run merges into a report measured with the same settings only
    settings = {k: v for k, v in vars(args).items() if k not in ("variants", "out", "plot")}
    results: dict[str, Any] = (
        dict(previous.get("results", {})) if previous.get("settings") == settings else {}
    )
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {variant!r}; known: {VARIANTS}")
        run = Path(args.runs) / variant
        wall = train_variant(args, variant, run)
        model, tokenizer = load_checkpoint(run / "best")
        evaluated = evaluate_model(model, tokenizer, test, variant, relevance=relevance)
        pointing = evaluate_pointing(model, tokenizer, test, synthetic_targets(scenes))
        curve = learning_curve(run)
        best = json.loads((run / "best" / "teran_config.json").read_text())["meta"]
        results[variant] = {
            "metrics": evaluated.metrics.to_dict(),
            "pointing": pointing.to_dict(),
            "curve": curve,
            "best_step": best["step"],
            "steps": curve[-1]["step"],
            "train_minutes": curve[-1]["minutes"],
            "wall_seconds": round(wall, 1),
        }
        print(json.dumps({variant: {k: v for k, v in results[variant].items() if k != "curve"}}))
    ratio = (
        results["MrSw"]["metrics"]["rsum"] / results["global"]["metrics"]["rsum"]
        if "MrSw" in results and "global" in results
        else None
    )
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": "synthetic compositional scenes (teran.data.synthetic)",
        "machine": {
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.machine(),
        },
        "settings": settings,
        "recipe": cfg.train.__dict__,
        "results": results,
        "rsum_ratio_mrsw_to_global": ratio,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "table": table(results),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    plot(results, Path(args.plot))
    print(report["table"])
    if ratio is not None:
        print(f"MrSw rsum / global rsum = {ratio:.2f}")
    print(f"wall time {(time.perf_counter() - started) / 60:.1f} min; written to {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
