"""Training: the loop learns, a resumed run continues exactly, DDP equals one process."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from teran import create_model, get_model_config
from teran.data.pairs import PairBatch
from trainer import main as train_main
from trainer.distributed import DistInfo
from trainer.task import TeranTask
from trainer.train import TrainState, build_schedule, train_one_epoch

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 220, 40),
}
SHAPES = ("circle", "square")


def _write_folder_dataset(root: Path) -> Path:
    """A tiny raw-image dataset: one coloured shape per picture, five captions each."""
    lines = []
    for i, (colour, rgb) in enumerate(COLOURS.items()):
        for j, shape in enumerate(SHAPES):
            for k in range(2):
                name = f"img_{i}_{j}_{k}.png"
                im = Image.new("RGB", (96, 96), (128, 128, 128))
                draw = ImageDraw.Draw(im)
                box = (10 + 30 * k, 20, 60 + 30 * k, 70)
                (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=rgb)
                im.save(root / name)
                caps = [
                    f"a {colour} {shape}.",
                    f"a picture of a {colour} {shape}.",
                    f"one {colour} {shape} on grey.",
                    f"there is a {colour} {shape} here.",
                    f"the {shape} is {colour}.",
                ]
                lines.append(json.dumps({"image": name, "captions": caps}))
    captions = root / "captions.jsonl"
    captions.write_text("\n".join(lines) + "\n")
    return captions


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder_dataset(tmp_path_factory.mktemp("folder"))


def _train(folder_data: Path, out: Path, cache: Path, *extra: str) -> None:
    args = [
        "--dataset", "folder", "--data", str(folder_data), "--val-data", str(folder_data),
        "--cache-dir", str(cache), "--output", str(out), "--batch-size", "8", "--lr", "1e-3",
        "--warmup", "none", "--no-progress", *extra,
    ]  # fmt: skip
    assert train_main.main(args) == 0


def test_loss_decreases_and_checkpoints_are_written(folder_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(folder_data, out, tmp_path / "cache", "--epochs", "4")
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * (16 * 5 // 8)
    per_epoch = [sum(float(r["loss"]) for r in rows if r["epoch"] == str(e)) for e in range(1, 5)]
    assert per_epoch[-1] < 0.85 * per_epoch[0], per_epoch
    val = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [v["epoch"] for v in val] == [1, 2, 3, 4]
    assert all("val" in v for v in val)
    assert val[-1]["val"]["rsum"] > val[0]["val"]["rsum"]
    best = json.loads((out / "best" / "teran_config.json").read_text())["meta"]
    assert best["rsum"] == max(v["val"]["rsum"] for v in val)
    assert (out / "last" / "model.safetensors").is_file()


def test_resume_continues_exactly(folder_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(folder_data, straight, cache, "--epochs", "2")
    _train(folder_data, resumed, cache, "--epochs", "1")
    _train(folder_data, resumed, cache, "--epochs", "2", "--resume")
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(resumed / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    log_a = (straight / "metrics.csv").read_text().splitlines()
    log_b = (resumed / "metrics.csv").read_text().splitlines()
    assert log_a == log_b


def test_time_budget_stops_a_run_and_curves_are_logged_mid_epoch(
    folder_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "budget"
    _train(
        folder_data, out, tmp_path / "cache", "--epochs", "1000", "--time-budget", "0.03",
        "--val-every-steps", "4", "--hardest-after", "6", "--lr-schedule", "cosine",
    )  # fmt: skip
    records = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    steps = records[-1]["step"]
    assert 0 < steps < 1000 * 10, "the budget did not stop the run"
    partial = [r for r in records if r.get("partial")]
    assert [r["step"] for r in partial] == list(range(4, steps + 1, 4))
    assert all("val" in r for r in partial) and "val" in records[-1]
    minutes = [r["train_minutes"] for r in records]
    assert minutes == sorted(minutes) and minutes[-1] >= 0.03
    best = json.loads((out / "best" / "teran_config.json").read_text())["meta"]
    assert best["rsum"] == max(r["val"]["rsum"] for r in records)
    assert (out / "last" / "model.safetensors").is_file()


def test_loss_sums_every_negative_until_hardest_after(tmp_path: Path) -> None:
    model, tokenizer = _no_dropout_model()
    task = TeranTask(model, "MrSw", max_violation=True)
    seen: list[bool] = []
    task.register_forward_pre_hook(lambda module, args: seen.append(module.max_violation))
    batch = _global_batch(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    schedule = build_schedule(optimizer, 4, 1, 1.0, 0, "cosine", 4)
    state = TrainState()
    for _ in range(2):
        train_one_epoch(
            task, [batch, batch], optimizer, schedule, state, 2.0, None, None,
            torch.device("cpu"), progress=False, hardest_after=3,
        )  # fmt: skip
    assert seen == [False, False, False, True]
    assert task.max_violation is True
    assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, 10, 100, 0.1, 10, "cosine", 110)
    factors = []
    for _ in range(110):
        factors.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5) and schedule.get_last_lr()[0] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    with pytest.raises(ValueError, match="lr_schedule"):
        build_schedule(optimizer, 10, 1, 0.1, 0, "linear", 10)


# --- DDP ----------------------------------------------------------------------------------


def _no_dropout_model() -> tuple[Any, Any]:
    cfg = get_model_config("teran-minilm-tiny")
    cfg = dataclasses.replace(cfg, dropout=0.0, vision=dataclasses.replace(cfg.vision, dropout=0.0))
    torch.manual_seed(0)
    model, tokenizer = create_model(cfg)
    for p in model.textual.backbone.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def _global_batch(tokenizer) -> PairBatch:
    gen = torch.Generator().manual_seed(5)
    sentences = [
        f"a {c} {s} next to a {d} square."
        for c in COLOURS
        for s, d in zip(SHAPES, COLOURS, strict=False)
    ]
    tokens = tokenizer(sentences[:8])
    n = torch.tensor([5, 9, 3, 7, 9, 2, 6, 8])
    x1y1 = torch.rand(8, 9, 2, generator=gen) * 0.5
    return PairBatch(
        features=torch.randn(8, 9, 320, generator=gen),
        boxes=torch.cat([x1y1, x1y1 + 0.3], -1),
        n_regions=n,
        token_ids=tokens.ids,
        lengths=tokens.lengths,
        image_index=torch.arange(8),
        caption_index=torch.arange(8),
    )


def _slice(batch: PairBatch, rows: slice) -> PairBatch:
    return PairBatch(**{k: v[rows] for k, v in vars(batch).items()})


def _grads(task: Any, batch: PairBatch) -> dict[str, torch.Tensor]:
    task.train()
    inner = task.module if hasattr(task, "module") else task
    inner.model.textual.backbone.eval()
    task(batch)["loss"].backward()
    return {n: p.grad.clone() for n, p in inner.model.named_parameters() if p.grad is not None}


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, tokenizer = _no_dropout_model()
    info = DistInfo(rank=rank, world_size=world)
    task = torch.nn.parallel.DistributedDataParallel(TeranTask(model, "MrSw", dist_info=info))
    local = _slice(_global_batch(tokenizer), slice(4 * rank, 4 * rank + 4))
    grads = _grads(task, local)
    if rank == 0:
        torch.save(grads, out)
    dist.destroy_process_group()


def test_ddp_gradients_equal_single_process(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    model, tokenizer = _no_dropout_model()
    single = _grads(TeranTask(model, "MrSw"), _global_batch(tokenizer))
    assert ddp.keys() == single.keys()
    assert len(single) > 10
    for name, g in single.items():
        torch.testing.assert_close(ddp[name], g, rtol=1e-4, atol=1e-6, msg=name)
