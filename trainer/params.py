"""Command-line parameters of `python -m trainer.main` (defaults: the config's paper recipe)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from teran.alignment import MEASURES

DATASETS = ("synthetic", "coco", "f30k", "folder")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainer.main",
        description="Train TERAN (or the single-vector baseline) and validate it every epoch.",
    )
    model = p.add_argument_group("model")
    model.add_argument("--model", default="teran-minilm-tiny", help="registered config name")
    model.add_argument("--backbone", help="text backbone folder (overrides the config)")
    model.add_argument("--init", help="start from this checkpoint folder (this project's format)")
    model.add_argument(
        "--measure", choices=MEASURES, help="objective: alignment mode, or 'global' (baseline)"
    )
    freeze = model.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true")
    freeze.add_argument("--finetune-backbone", dest="freeze_backbone", action="store_false")
    model.set_defaults(freeze_backbone=None)

    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="synthetic")
    data.add_argument(
        "--data", help="coco/f30k: data root; folder: captions file (.jsonl or COCO .json)"
    )
    data.add_argument("--val-data", help="folder: validation captions file")
    data.add_argument("--features-root", help="coco/f30k: bottom-up features root")
    data.add_argument("--val-split", default="dev", help="coco/f30k split used for validation")
    data.add_argument("--train-images", type=int, default=4000, help="synthetic: train images")
    data.add_argument("--val-images", type=int, default=500, help="synthetic: validation images")
    data.add_argument("--data-seed", type=int, default=0, help="synthetic: scene seed")
    data.add_argument("--cache-dir", default=".cache/teran", help="region feature caches")
    data.add_argument(
        "--batches",
        choices=("auto", "groups", "random"),
        default="random",
        help="groups: batches of whole confusable image groups (trainer/sampling.py); auto: "
        "groups where the source declares them",
    )

    opt = p.add_argument_group("optimisation (defaults: the config's recipe)")
    opt.add_argument("--epochs", type=int)
    opt.add_argument("--batch-size", type=int, help="per process")
    opt.add_argument("--lr", type=float)
    opt.add_argument("--grad-clip", type=float)
    opt.add_argument("--margin", type=float)
    opt.add_argument("--all-negatives", action="store_true", help="sum over negatives, not max")
    opt.add_argument(
        "--hardest-after", type=int, help="steps summing over every negative before the hardest"
    )
    opt.add_argument("--lr-schedule", choices=("step", "cosine"))
    opt.add_argument("--lr-step-epochs", type=int)
    opt.add_argument("--lr-gamma", type=float)
    opt.add_argument("--warmup", choices=("none", "linear"))
    opt.add_argument("--warmup-steps", type=int)
    opt.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (quick runs)")

    run = p.add_argument_group("run")
    run.add_argument("--output", default="runs/teran", help="checkpoints, logs, reports")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/train_state.pt")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--workers", type=int, default=0, help="data loader workers")
    run.add_argument("--val-every", type=int, default=1, help="validate every N epochs")
    run.add_argument(
        "--val-every-steps", type=int, help="also validate every N steps (learning curves)"
    )
    run.add_argument(
        "--time-budget", type=float, help="stop after this many minutes of training (validated)"
    )
    run.add_argument("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)
