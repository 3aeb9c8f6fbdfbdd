"""`make bench-upgrade`: a zero-downtime model upgrade under search load, on this machine.

One single-process server (target all, embedded store, in-process inference) loads the demo
model and a second version of it (its trainable weights perturbed, saved into the workdir as
tests/services/test_upgrade.py does). In one run:

- Ingestion: N synthetic scene pictures as PNG bytes through ImageEncoder.Ingest, images/s.
- Idle search: Ranker.Search latency (p50/p99) with `--clients` concurrent clients, a fixed
  number of queries.
- Upgrade: Admin.Upgrade to the standby version (grace 1 s) while the same clients search
  without pause. Wall time of the call; the phases from the arrival times of the streamed
  progress (copy: first COPY message to SWITCH; grace: SWITCH to the first CATCH_UP message;
  catch-up: to DONE); re-encoded images/s over the copy phase; search p50/p99 during the
  upgrade, failed searches (asserted 0) and answers per model version. Searches keep the old
  version for up to `store.alias_ttl_s` (1 s) after the switch, so with a 1 s grace few answers
  come from the new version before the call returns.
- The ratio of the search p50 during the upgrade to the idle one.

Both versions' image and text paths are warmed before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import torch

from benchmarks.bench_services import QUERIES
from benchmarks.served import run_clients
from services.config import load_settings
from services.main import start
from teran.checkpoint import load_checkpoint, model_version, read_header, save_checkpoint
from teran.data.synthetic import SyntheticScenes
from teran_dev.demo_data import png_bytes
from teran_protos.v1 import admin_pb2 as apb
from teran_protos.v1 import admin_pb2_grpc as agrpc
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc
from teran_protos.v1 import text_encoder_pb2 as tpb
from teran_protos.v1 import text_encoder_pb2_grpc as tgrpc

Phase = apb.UpgradeProgress.Phase
SEARCH_TIMEOUT_S = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--images", type=int, default=400, help="pictures ingested, then re-encoded")
    p.add_argument("--clients", type=int, default=2, help="concurrent search clients")
    p.add_argument("--queries", type=int, default=48, help="timed searches while idle")
    p.add_argument("--grace-s", type=float, default=1.0, help="the Upgrade's grace_seconds")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="benchmarks/results/upgrade.json")
    return p.parse_args(argv)


def next_version(checkpoint: Path, folder: Path) -> Path:
    """Another model version of `checkpoint`: same architecture, trainable weights perturbed."""
    model, tokenizer = load_checkpoint(checkpoint)
    torch.manual_seed(1)
    with torch.no_grad():  # a different head: different vectors, same shapes
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    bundled = bool(read_header(checkpoint).get("bundled_backbone"))
    save_checkpoint(model, tokenizer, folder, bundled_backbone=bundled)
    assert model_version(folder) != model_version(checkpoint)
    return folder


@dataclass
class Answer:
    start: float
    end: float
    version: str  # "" when it failed
    error: str = ""


def _search(stub: rgrpc.RankerStub, q: int) -> Answer:
    t = time.perf_counter()
    try:
        reply = stub.Search(
            rpb.SearchRequest(query=QUERIES[q % len(QUERIES)], top_k=10), timeout=SEARCH_TIMEOUT_S
        )
    except grpc.RpcError as err:
        return Answer(t, time.perf_counter(), "", f"{err.code().name}: {err.details()}")
    return Answer(t, time.perf_counter(), reply.model_version)


def _latencies(answers: list[Answer]) -> dict[str, float]:
    ms = sorted(1000 * (a.end - a.start) for a in answers if not a.error)
    return {
        "searches": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
    }


def bench_ingest(channel: grpc.Channel, n: int, versions: list[str]) -> dict[str, float]:
    scenes = SyntheticScenes(n, split="test", seed=11)
    payloads = [png_bytes(scenes.image(i)) for i in range(n)]
    stub = igrpc.ImageEncoderStub(channel)
    for version in versions:  # warm-up of both image paths, nothing stored
        stub.EncodeImage(ipb.EncodeImageRequest(image=payloads[0], model_version=version))
    t0 = time.perf_counter()
    items = (ipb.IngestItem(id=f"img{i}", image=b) for i, b in enumerate(payloads))
    stored = sum(r.stored for r in stub.Ingest(items))
    served = time.perf_counter() - t0
    assert stored == n, f"only {stored} of {n} stored"
    return {"images": n, "seconds": served, "images_per_s": n / served}


def bench_idle(stub: rgrpc.RankerStub, clients: int, queries: int) -> tuple[dict[str, Any], str]:
    answers: list[Answer] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for q in range(k, queries, clients):
            a = _search(stub, q)
            with lock:
                answers.append(a)

    wall = run_clients(client, clients)
    failed = [a.error for a in answers if a.error]
    assert not failed, failed[:3]
    versions = {a.version for a in answers}
    assert len(versions) == 1, versions
    return {**_latencies(answers), "queries_per_s": len(answers) / wall}, versions.pop()


def bench_upgrade(
    channel: grpc.Channel, clients: int, grace_s: float, images: int, old: str, new: str
) -> dict[str, Any]:
    ranker, admin = rgrpc.RankerStub(channel), agrpc.AdminStub(channel)
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        q = k
        while not stop.is_set():
            a = _search(ranker, q)
            with lock:
                answers.append(a)
            q += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    time.sleep(0.2)  # the clients are searching before the upgrade starts
    progress: list[tuple[float, apb.UpgradeProgress]] = []
    t0 = time.perf_counter()
    for p in admin.Upgrade(apb.UpgradeRequest(model_version=new, grace_seconds=grace_s)):
        progress.append((time.perf_counter(), p))
    wall = time.perf_counter() - t0
    stop.set()
    for th in threads:
        th.join()

    failed = [a.error for a in answers if a.error]
    assert not failed, f"{len(failed)} searches failed during the upgrade: {failed[:3]}"
    last = progress[-1][1]
    assert last.phase == Phase.DONE and last.live_version == new, last

    def first(phase: int) -> float:
        return next(t for t, p in progress if p.phase == phase)

    copy0, switch, catch0, done = (
        first(Phase.COPY),
        first(Phase.SWITCH),
        first(Phase.CATCH_UP),
        first(Phase.DONE),
    )
    # a pass opens with done == 0 and its total; the copy may take several passes
    copied = sum(p.total for _, p in progress if p.phase == Phase.COPY and p.done == 0)
    caught_up = sum(p.total for _, p in progress if p.phase == Phase.CATCH_UP and p.done == 0)
    assert copied == images, f"copied {copied} items, {images} images stored"
    during = [a for a in answers if a.start >= t0 and a.end <= t0 + wall]
    versions = [a.version for a in sorted(during, key=lambda a: a.start)]
    assert set(versions) <= {old, new}, set(versions)
    return {
        "grace_seconds": grace_s,
        "wall_s": wall,
        "phases_s": {
            "until_first_progress": copy0 - t0,
            "copy": switch - copy0,
            "grace": catch0 - switch,
            "catch_up": done - catch0,
        },
        "copied_items": copied,
        "caught_up_items": caught_up,
        "reencode_images_per_s": images / (switch - copy0),
        "search": _latencies(during),
        "search_during_copy": _latencies([a for a in during if copy0 <= a.start < a.end <= switch]),
        "failed_searches": len(failed),
        "answers_by_version": {v: versions.count(v) for v in (old, new)},
        "first_new_answer_after_switch_s": min(
            (a.start - switch for a in during if a.version == new), default=None
        ),
        "searches_outside_window": len(answers) - len(during),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_run = time.perf_counter()
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure
    checkpoint = Path(args.checkpoint)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teran-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    standby = next_version(checkpoint, workdir / "next")
    old, new = model_version(checkpoint), model_version(standby)
    settings = load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint)},
            "standby_models": [{"checkpoint": str(standby)}],
            "store": {"path": str(workdir / "store")},
        },
        server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1},
    )
    running = start(settings)
    try:
        with grpc.insecure_channel(running.address) as channel:
            ranker = rgrpc.RankerStub(channel)
            text = tgrpc.TextEncoderStub(channel)
            for version in (old, new):  # warm-up of both text paths
                text.EncodeText(tpb.EncodeTextRequest(sentences=QUERIES, model_version=version))
            ingest = bench_ingest(channel, args.images, [old, new])
            ranker.Search(rpb.SearchRequest(query=QUERIES[0], top_k=10))  # warm-up
            idle, served_by = bench_idle(ranker, args.clients, args.queries)
            assert served_by == old, f"idle searches answered by {served_by}, not {old}"
            upgrade = bench_upgrade(channel, args.clients, args.grace_s, args.images, old, new)
    finally:
        running.stop(0)
    shutil.rmtree(workdir, ignore_errors=True)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": torch.get_num_threads(),
            "processor": platform.machine(),
            "load_average_1m_at_start": load_at_start,
        },
        "model_version": old,
        "upgraded_to": new,
        "clients": args.clients,
        "ingest": ingest,
        "search_idle": idle,
        "upgrade": upgrade,
        "p50_during_vs_idle": upgrade["search"]["p50_ms"] / idle["p50_ms"],
        "run_s": time.perf_counter() - t_run,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    up, during = report["upgrade"], report["upgrade"]["search"]
    phases = up["phases_s"]
    print(f"ingest: {ingest['images']} images, {ingest['images_per_s']:.1f} img/s")
    print(
        f"upgrade {old} -> {new}: {up['wall_s']:.1f} s (copy {phases['copy']:.1f} s, grace "
        f"{phases['grace']:.1f} s, catch-up {phases['catch_up']:.2f} s), re-encoded "
        f"{up['reencode_images_per_s']:.1f} img/s"
    )
    print(f"{'search, ' + str(args.clients) + ' clients':<22} {'p50 ms':>8} {'p99 ms':>8} {'n':>5}")
    rows = [
        ("idle", idle),
        ("during upgrade", during),
        ("  of which copy", up["search_during_copy"]),
    ]
    for name, s in rows:
        print(f"{name:<22} {s['p50_ms']:>8.0f} {s['p99_ms']:>8.0f} {s['searches']:>5}")
    by_version = ", ".join(f"{v}: {n}" for v, n in up["answers_by_version"].items())
    print(
        f"p50 during/idle {report['p50_during_vs_idle']:.2f}; failed searches "
        f"{up['failed_searches']}; answers by version {by_version}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
