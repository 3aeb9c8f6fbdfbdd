"""`python -m trainer.main`: train TERAN, validate every epoch, keep the best and last checkpoints.

Single process: `python -m trainer.main --dataset synthetic --output runs/x`.
Several processes or GPUs: `torchrun --nproc-per-node N -m trainer.main ...` (the loss still
uses the hardest negatives of the whole global batch; see trainer/distributed.py).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from teran.backbone import BUNDLED_BACKBONES
from teran.checkpoint import load_checkpoint, save_checkpoint
from teran.config import TeranCfg, TrainRecipe
from teran.data.pairs import CaptionPairs
from teran.evaluation import evaluate_model
from teran.factory import create_model, get_model_config
from trainer.data import build_sources
from trainer.distributed import DistInfo, init_distributed
from trainer.params import parse_args
from trainer.sampling import GroupBatchSampler, source_groups
from trainer.task import TeranTask
from trainer.train import (
    TrainClock,
    TrainState,
    build_schedule,
    load_train_state,
    precompute_backbone,
    save_train_state,
    seed_everything,
    train_one_epoch,
    trainable_parameters,
)


def recipe_from_args(recipe: TrainRecipe, args: Any) -> TrainRecipe:
    """The config's recipe with the command line's overrides."""
    overrides: dict[str, Any] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "grad_clip": args.grad_clip,
        "margin": args.margin,
        "lr_step_epochs": args.lr_step_epochs,
        "lr_gamma": args.lr_gamma,
        "warmup_steps": args.warmup_steps,
        "freeze_backbone": args.freeze_backbone,
        "hardest_negatives_after": args.hardest_after,
        "lr_schedule": args.lr_schedule,
    }
    if args.warmup is not None:
        overrides["warmup"] = None if args.warmup == "none" else args.warmup
    if args.all_negatives:
        overrides["max_violation"] = False
    return dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def pick_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = init_distributed()
    seed_everything(args.seed)
    device = pick_device(args.device, info)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    if args.init:
        model, tokenizer = load_checkpoint(args.init)
    else:
        cfg: TeranCfg = get_model_config(args.model)
        model, tokenizer = create_model(cfg, backbone=args.backbone)
    cfg = model.cfg
    recipe = recipe_from_args(cfg.train, args)
    cfg.train = recipe
    measure = args.measure or cfg.alignment
    # a frozen bundled backbone is not stored in every checkpoint: the package holds it
    compact = recipe.freeze_backbone and cfg.text.backbone in BUNDLED_BACKBONES
    model.to(device)

    train_src, val_src = build_sources(args, cfg)
    pairs = CaptionPairs(train_src, tokenizer)
    text_hidden = (
        precompute_backbone(model, pairs.token_ids, pairs.pad_id, progress=args.progress)
        if recipe.freeze_backbone
        else None
    )
    groups = source_groups(train_src, len(train_src)) if args.batches != "random" else None
    if args.batches == "groups" and groups is None:
        raise ValueError(f"--batches groups: the {args.dataset} source declares no image groups")
    sampler: GroupBatchSampler | DistributedSampler[int]
    if groups is not None:
        sampler = GroupBatchSampler(
            groups,
            pairs.captions_per_image,
            recipe.batch_size,
            seed=args.seed,
            rank=info.rank,
            world_size=info.world_size,
        )
        loader = DataLoader(
            pairs, batch_sampler=sampler, collate_fn=pairs.collate, num_workers=args.workers
        )
    else:
        sampler = DistributedSampler(
            pairs,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=args.seed,
            drop_last=True,
        )
        loader = DataLoader(
            pairs,
            batch_size=recipe.batch_size,
            sampler=sampler,
            collate_fn=pairs.collate,
            num_workers=args.workers,
            drop_last=True,
        )
    optimizer = torch.optim.Adam(trainable_parameters(model, recipe.freeze_backbone), lr=recipe.lr)
    steps_per_epoch = len(loader)
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    schedule = build_schedule(
        optimizer,
        steps_per_epoch,
        recipe.lr_step_epochs,
        recipe.lr_gamma,
        recipe.warmup_steps if recipe.warmup == "linear" else 0,
        recipe.lr_schedule,
        steps_per_epoch * recipe.epochs,
    )
    task: torch.nn.Module = TeranTask(model, measure, recipe.margin, recipe.max_violation, info)
    if info.enabled:
        task = torch.nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None
        )

    state = TrainState()
    state_path = out / "train_state.pt"
    if args.resume and state_path.is_file():
        resumed, _ = load_checkpoint(out / "last")
        model.load_state_dict(resumed.state_dict())
        state = load_train_state(state_path, optimizer, schedule)
        if info.is_main:
            print(f"resumed from {out} after epoch {state.epoch} (step {state.step})")
    if info.is_main:
        (out / "params.json").write_text(
            json.dumps({"argv": list(argv or sys.argv[1:]), "config": cfg.to_dict()}, indent=2)
        )

    clock = TrainClock(state.train_seconds)
    budget_spent = [False]

    validated: dict[int, dict[str, Any]] = {}

    def validate(record: dict[str, Any]) -> None:
        """Validate (once per step), keep `best/`."""
        assert val_src is not None
        if state.step in validated:
            record["val"] = validated[state.step]
            return
        meta = {"epoch": record["epoch"], "step": state.step, "measure": measure}
        result = evaluate_model(model, tokenizer, val_src, measure)
        record["val"] = validated[state.step] = result.metrics.to_dict()
        rsum = result.metrics.rsum
        if rsum > state.best_rsum:
            state.best_rsum = rsum
            save_checkpoint(model, tokenizer, out / "best", {**meta, "rsum": rsum}, compact)

    def write_record(record: dict[str, Any]) -> None:
        record["train_minutes"] = round(clock.seconds() / 60, 3)
        with (out / "val.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            json.dumps({k: v for k, v in record.items() if k != "val"})
            + (f" val rsum {record['val']['rsum']:.1f}" if "val" in record else "")
        )

    def after_step(st: TrainState) -> bool:
        """Mid-epoch validation for learning curves; True once the time budget is spent."""
        if (
            info.is_main
            and val_src is not None
            and args.val_every_steps
            and st.step % args.val_every_steps == 0
        ):
            with clock.paused():
                record = {"epoch": st.epoch + 1, "step": st.step, "partial": True}
                validate(record)
                write_record(record)
            if text_hidden is not None:  # validation put the whole model back in train mode
                model.textual.backbone.eval()
        spent = args.time_budget is not None and clock.seconds() >= args.time_budget * 60
        if info.enabled:  # every process stops at the same step: rank 0's clock decides
            flag = torch.tensor([float(spent)], device=device)
            torch.distributed.broadcast(flag, 0)
            spent = bool(flag.item())
        budget_spent[0] = spent
        return spent

    log_path = out / "metrics.csv"
    new_log = not log_path.exists() or not args.resume
    with log_path.open("w" if new_log else "a", newline="") as log_file:
        log = csv.DictWriter(log_file, fieldnames=["step", "epoch", "loss", "lr"])
        if new_log:
            log.writeheader()
        for epoch in range(state.epoch, recipe.epochs):
            sampler.set_epoch(epoch)
            start = time.perf_counter()
            with clock.running():
                mean_loss = train_one_epoch(
                    task,
                    loader,
                    optimizer,
                    schedule,
                    state,
                    recipe.grad_clip,
                    text_hidden,
                    log if info.is_main else None,
                    device,
                    args.max_steps_per_epoch,
                    args.progress and info.is_main,
                    recipe.hardest_negatives_after,
                    after_step,
                )
            log_file.flush()
            out_of_time = budget_spent[0]
            state.epoch = epoch + 1
            state.train_seconds = clock.seconds()
            if not info.is_main:
                if out_of_time:
                    break
                continue
            record: dict[str, Any] = {
                "epoch": state.epoch,
                "step": state.step,
                "loss": mean_loss,
                "seconds": round(time.perf_counter() - start, 2),
            }
            last = state.epoch == recipe.epochs or out_of_time
            if val_src is not None and (state.epoch % args.val_every == 0 or last):
                validate(record)
            write_record(record)
            meta = {"epoch": state.epoch, "step": state.step, "measure": measure}
            save_checkpoint(model, tokenizer, out / "last", meta, compact)
            save_train_state(state_path, state, optimizer, schedule)
            if out_of_time:
                print(f"time budget of {args.time_budget:g} min spent after step {state.step}")
                break
        if info.enabled:
            torch.distributed.barrier()
    if info.enabled:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
