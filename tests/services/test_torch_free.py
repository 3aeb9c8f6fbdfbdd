"""A Triton-backed process runs without torch: tokenising, pixels and the app itself, checked in
a subprocess where `import torch` (and torchvision) fails. The inputs it prepares are the ones the
torch path gives the in-process model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from teran.checkpoint import load_checkpoint
from teran.regions import to_pixels

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["a red square next to a blue circle.", "two dogs run on the beach"]
NO_TORCH = "import sys\nfor _name in ('torch', 'torchvision'):\n    sys.modules[_name] = None\n"
TORCH_FREE = ("torch", "torchvision", "safetensors.torch", "onnx", "efficientnet_lite_pytorch")

# Everything a Triton-backed text encoder, image encoder or ranker loads, then the text and image
# sides run over a stand-in backend that keeps the arrays they send.
ENCODE = """
import json
import numpy as np
from pathlib import Path
import services.main, services.modules, services.inference.factory, services.inference.triton
from services.config import ImageEncoderCfg
from services.core.images import ImageEncoding
from services.core.text import TextEncoding
from services.inference.base import ModelInfo
from services.inference.models import ServedModels
from teran.tokenizer import load_tokenizer

checkpoint, sentences, images, out = sys.argv[1:5]
sent = {}

class Backend:
    info = ModelInfo("v", embed_dim=4, feat_dim=8, image_size=int(sys.argv[5]), max_tokens=32)

    def encode_text(self, ids, lengths):
        sent["ids"], sent["lengths"] = ids, lengths
        return np.zeros((*ids.shape, 4), np.float32)

    def encode_pixels(self, pixels):
        sent["pixels"] = pixels
        return np.zeros((len(pixels), 5, 4), np.float32), np.zeros((len(pixels), 4, 4), np.float32)

models = ServedModels({"v": Backend()}, {"v": Path(checkpoint)}, primary="v")
text = TextEncoding(models, {"v": load_tokenizer(checkpoint)})
encoded = text.encode(json.loads(sentences))
images_side = ImageEncoding(models, ImageEncoderCfg())
pictures = [images_side.decode(p.read_bytes(), "image") for p in sorted(Path(images).iterdir())]
images_side.encode(pictures)
np.savez(out, **sent)
print(json.dumps({"tokens": [e.tokens for e in encoded], "modules": sorted(
    m for m in sys.modules if sys.modules[m] is not None and m.startswith(TORCH_FREE))}))
"""

# The app with every module of `target: all` and the Triton backend, Triton unreachable.
START = """
import json
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from services.config import load_settings
from services.main import start

checkpoint, store, port = sys.argv[1:4]
settings = load_settings(
    None,
    common={
        "model": {"checkpoint": checkpoint},
        "inference": {"backend": "triton", "triton_url": f"127.0.0.1:{port}", "timeout_s": 2},
        "store": {"path": store},
    },
    server={"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 0},
)
running = start(settings)
try:
    with grpc.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
finally:
    running.stop(0)
print(json.dumps({"health": status, "components": sorted(running.app.components), "modules": sorted(
    m for m in sys.modules if sys.modules[m] is not None and m.startswith(TORCH_FREE))}))
"""


def _run(script: str, *args: str) -> dict[str, Any]:
    code = f"{NO_TORCH}TORCH_FREE = {TORCH_FREE!r}\n{script}"
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["modules"] == [], f"loaded without need: {result['modules']}"
    return result


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    shapes = [(120, 90, 3), (33, 257, 3), (64, 64, 4)]
    return [Image.fromarray(rng.integers(0, 256, s, dtype=np.uint8)) for s in shapes]


def test_the_text_and_image_sides_prepare_the_torch_inputs_without_torch(
    checkpoint: Path, tmp_path: Path
) -> None:
    model, tokenizer = load_checkpoint(checkpoint)
    assert model.cfg.vision.extractor is not None
    side = model.cfg.vision.extractor.image_size
    folder = tmp_path / "images"
    folder.mkdir()
    pictures = _pictures()
    for i, picture in enumerate(pictures):
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        (folder / f"{i}.png").write_bytes(buf.getvalue())
    out = tmp_path / "sent.npz"
    result = _run(ENCODE, str(checkpoint), json.dumps(SENTENCES), str(folder), str(out), str(side))

    sent = np.load(out)
    tokens = tokenizer(SENTENCES)
    assert torch.equal(torch.from_numpy(sent["ids"]), tokens.ids)
    assert torch.equal(torch.from_numpy(sent["lengths"]), tokens.lengths)
    assert result["tokens"] == tokens.tokens
    rgb = [p.convert("RGB") for p in pictures]  # what ImageEncoding.decode gives
    np.testing.assert_allclose(sent["pixels"], to_pixels(rgb, side).numpy(), rtol=0, atol=1e-6)


def test_the_triton_backed_app_starts_without_torch(checkpoint: Path, tmp_path: Path) -> None:
    """Every module of `target: all` over an unreachable Triton: up, NOT_SERVING, no torch."""
    from teran.tritonserver import free_port

    result = _run(START, str(checkpoint), str(tmp_path / "store"), str(free_port()))
    assert result["health"] == "NOT_SERVING"
    assert {"inference", "text", "images", "ranker"} <= set(result["components"])
