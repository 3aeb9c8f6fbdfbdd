"""`make bench-services`: ingestion through the served system against the model's own forward.

Images/s through ImageEncoder.Ingest (gRPC, decode, model, pooling of the regions for the
two-stage index, durable store writes), against the model's forward pass on the same images.
Search at scale (latency, throughput, recall, memory against collection size) is
`make bench-scale` (`benchmarks/bench_scale.py`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import torch

from services.config import load_settings
from services.inference.inprocess import InProcessBackend
from services.main import start
from teran.checkpoint import model_version
from teran.data.synthetic import SyntheticScenes
from teran.regions import to_pixels
from teran_dev.demo_data import png_bytes
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc

QUERIES = [
    "a red circle to the left of a blue square.",
    "a small green triangle above a large yellow cross.",
    "a white square at the bottom.",
    "there is a purple circle right of an orange triangle.",
    "a big blue cross and a small red square.",
    "two shapes: a green circle and a white triangle.",
    "an orange square below a purple cross.",
    "a yellow circle in the top left corner.",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--ingest-images", type=int, default=200)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="benchmarks/results/services.json")
    return p.parse_args(argv)


def bench_ingest(checkpoint: Path, workdir: Path, n: int) -> dict[str, float]:
    scenes = SyntheticScenes(n, split="test", seed=11)
    pictures = [scenes.image(i) for i in range(n)]
    payloads = [png_bytes(p) for p in pictures]
    backend = InProcessBackend(checkpoint)
    size = backend.info.image_size or 224
    pixels = to_pixels(pictures, size).numpy()
    backend.encode_pixels(pixels[:2])  # warm-up
    t0 = time.perf_counter()
    for start_ in range(0, n, 16):
        backend.encode_pixels(pixels[start_ : start_ + 16])
    forward = time.perf_counter() - t0
    backend.close()
    settings = load_settings(
        None,
        common={
            "model": {"checkpoint": str(checkpoint)},
            "store": {"path": str(workdir / "ingest")},
        },
        server={"grpc_port": 0, "metrics_port": None},
    )
    running = start(settings)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = igrpc.ImageEncoderStub(channel)
            list(stub.Ingest(iter([ipb.IngestItem(id="warm", image=payloads[0])])))
            t0 = time.perf_counter()
            items = (ipb.IngestItem(id=f"img{i}", image=b) for i, b in enumerate(payloads))
            stored = sum(r.stored for r in stub.Ingest(items))
            served = time.perf_counter() - t0
    finally:
        running.stop(0)
    assert stored == n, f"only {stored} of {n} stored"
    return {
        "images": n,
        "model_forward_images_per_s": n / forward,
        "ingest_images_per_s": n / served,
        "ingest_vs_forward": forward / served,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    checkpoint = Path(args.checkpoint)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teran-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": torch.get_num_threads(), "processor": platform.machine()},
        "model_version": model_version(checkpoint),
        "ingest": bench_ingest(checkpoint, workdir, args.ingest_images),
    }
    shutil.rmtree(workdir, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ing = report["ingest"]
    print(
        f"ingest: {ing['ingest_images_per_s']:.1f} img/s end to end, model forward "
        f"{ing['model_forward_images_per_s']:.1f} img/s (ratio {ing['ingest_vs_forward']:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
