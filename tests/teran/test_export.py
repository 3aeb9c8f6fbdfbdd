"""ONNX export, Triton repository and a real tritonserver: every path held to PyTorch (1e-4).

One model serves every test here: teran-minilm-tiny (real MiniLM backbone) built with
vision.feat_dim set to the grid extractor's width, so the same export feeds the text, region and
pixels checks whatever feat_dim the registered config carries. It is exported once per module.
"""

from __future__ import annotations

import json
import queue
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException, np_to_triton_dtype
from typer.testing import CliRunner

from teran import SentenceTokenizer, Teran, create_model, get_model_config
from teran import triton_python_model as tpm
from teran.checkpoint import import_reference_checkpoint, save_checkpoint
from teran.export import (
    BOXES,
    FEATURES,
    IMAGE_MODEL,
    LENGTHS,
    N_REGIONS,
    PIXELS,
    PIXELS_MODEL,
    REGION_BOXES,
    REGION_EMBEDDINGS,
    TEXT_MODEL,
    TOKEN_IDS,
    WORD_EMBEDDINGS,
    ImageTower,
    check_parity,
    export_onnx,
)
from teran.fixtures import Fixture
from teran.regions import GridRegionExtractor
from teran.triton_repo import MANIFEST_FILE, build_repository, read_manifest
from teran.tritonserver import TritonServer, TritonStartError
from trainer.export import app as export_cli
from trainer.export import pick_extractor

TOL = 1e-4
SENTENCES = [
    "A dog.",
    "Two people ride bicycles along a river at sunset.",
    "A red double-decker bus drives down a busy city street full of people, cars and bikes.",
]
EXPORT_REGIONS = 5  # R of the example inputs in teran.export._example_inputs

pytestmark = pytest.mark.slow  # ONNX exports and real tritonservers: tens of seconds


@pytest.fixture(scope="module")
def extractor() -> GridRegionExtractor:
    return GridRegionExtractor()


@pytest.fixture(scope="module")
def grid_model(extractor: GridRegionExtractor) -> tuple[Teran, SentenceTokenizer]:
    cfg = get_model_config("teran-minilm-tiny")
    cfg.vision.feat_dim = extractor.feat_dim
    torch.manual_seed(0)
    return create_model(cfg, pretrained_backbone=True)


@pytest.fixture(scope="module")
def exported(
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    return export_onnx(grid_model[0], extractor, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def python_repo(
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
    exported: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    repo = tmp_path_factory.mktemp("repo-python")
    build_repository(grid_model[0], repo, extractor, "python", meta={"run": "test"}, files=exported)
    return repo


def _images(count: int, seed: int) -> list[Image.Image]:
    """Gradients with coloured rectangles: image-like structure for the CNN, no dataset."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        ramp = np.linspace(0.0, 1.0, 256)
        canvas = (ramp[None, :, None] * rng.uniform(60, 255, 3) + rng.uniform(0, 60, 3)).repeat(
            256, axis=0
        )
        for _ in range(5):
            x, y = rng.integers(0, 200, 2)
            w, h = rng.integers(16, 80, 2)
            canvas[y : y + h, x : x + w] = rng.uniform(0, 255, 3)
        images.append(Image.fromarray(canvas.clip(0, 255).astype(np.uint8)))
    return images


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check_slots(onnx_slots: np.ndarray, torch_slots: torch.Tensor, regions: int) -> float:
    """ONNX keeps R + 1 slots, encode_image the longest image's: compare, and 0 past it."""
    assert onnx_slots.shape[1] == regions + 1
    width = torch_slots.shape[1]
    assert not np.abs(onnx_slots[:, width:]).any()
    return float(np.abs(onnx_slots[:, :width] - torch_slots.numpy()).max())


# --- ONNX files ---------------------------------------------------------------------------


def test_onnx_files_declare_the_contract(exported: dict[str, Path]) -> None:
    expected = {
        TEXT_MODEL: ([TOKEN_IDS, LENGTHS], [WORD_EMBEDDINGS]),
        IMAGE_MODEL: ([FEATURES, BOXES, N_REGIONS], [REGION_EMBEDDINGS]),
        PIXELS_MODEL: ([PIXELS], [REGION_EMBEDDINGS, REGION_BOXES]),
    }
    assert set(exported) == set(expected)
    for name, (inputs, outputs) in expected.items():
        proto = onnx.load(str(exported[name]))
        onnx.checker.check_model(proto)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert [i.name for i in proto.graph.input] == inputs
        assert [o.name for o in proto.graph.output] == outputs
        for value in [*proto.graph.input, *proto.graph.output]:
            batch = value.type.tensor_type.shape.dim[0]
            assert batch.dim_param and not batch.dim_value, f"{name}.{value.name} batch is static"
    text_ids = onnx.load(str(exported[TEXT_MODEL])).graph.input[0].type.tensor_type
    assert text_ids.elem_type == onnx.TensorProto.INT64
    assert text_ids.shape.dim[1].dim_param  # tokens axis is dynamic too


@pytest.mark.parametrize("batch", [1, 3])
def test_text_parity(
    exported: dict[str, Path], grid_model: tuple[Teran, SentenceTokenizer], batch: int
) -> None:
    model, tokenizer = grid_model
    tokens = tokenizer(SENTENCES[-batch:])
    assert batch == 1 or len(set(tokens.lengths.tolist())) == batch  # really ragged
    (out,) = _session(exported[TEXT_MODEL]).run(
        None, {TOKEN_IDS: tokens.ids.numpy(), LENGTHS: tokens.lengths.numpy()}
    )
    with torch.no_grad():
        ref = model.encode_text(tokens.ids, tokens.lengths).tokens.numpy()
    assert out.shape == ref.shape == (batch, tokens.ids.shape[1], model.cfg.embed_dim)
    assert np.abs(out - ref).max() <= TOL
    assert np.abs(ref).max() > 0.01  # non-trivial vectors


@pytest.mark.parametrize(("batch", "regions"), [(1, 3), (3, 36), (2, EXPORT_REGIONS)])
def test_region_parity_at_other_region_counts(
    exported: dict[str, Path],
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
    batch: int,
    regions: int,
) -> None:
    """Real grid features, a region axis unlike the export's, fewer valid regions than R."""
    model = grid_model[0]
    with torch.no_grad():
        features, cells = extractor.extract(_images(batch, seed=regions))
    rng = np.random.default_rng(regions)
    picks = torch.from_numpy(rng.choice(cells.shape[0], regions, replace=False))
    features = features[:, picks].contiguous()
    boxes = cells[picks].expand(batch, -1, -1).contiguous()
    counts = torch.tensor([regions, *rng.integers(1, regions + 1, batch - 1)], dtype=torch.long)
    feeds = {FEATURES: features.numpy(), BOXES: boxes.numpy(), N_REGIONS: counts.numpy()}
    (out,) = _session(exported[IMAGE_MODEL]).run(None, feeds)
    with torch.no_grad():
        ref = model.encode_image(features, boxes, counts)
    assert _check_slots(out, ref.slots, regions) <= TOL
    lengths = np.linalg.norm(out, axis=-1).round(4)
    for row, n in enumerate(counts.tolist()):  # unit vectors on CLS + n regions, 0 after
        assert (lengths[row, : n + 1] == 1).all() and (lengths[row, n + 1 :] == 0).all()


def test_region_padding_garbage_does_not_leak(
    exported: dict[str, Path], grid_model: tuple[Teran, SentenceTokenizer]
) -> None:
    """Clients pad as they like: NaN past n_regions must not change the valid slots."""
    model = grid_model[0]
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 8, model.cfg.vision.feat_dim, generator=gen).relu()
    boxes = torch.rand(2, 8, 4, generator=gen)
    counts = torch.tensor([8, 3])
    session = _session(exported[IMAGE_MODEL])
    (clean,) = session.run(
        None, {FEATURES: features.numpy(), BOXES: boxes.numpy(), N_REGIONS: counts.numpy()}
    )
    features[1, 3:] = float("nan")
    boxes[1, 3:] = float("nan")
    (dirty,) = session.run(
        None, {FEATURES: features.numpy(), BOXES: boxes.numpy(), N_REGIONS: counts.numpy()}
    )
    assert np.isfinite(dirty).all()
    assert np.abs(dirty - clean).max() <= TOL


@pytest.mark.parametrize("batch", [1, 3])
def test_pixels_parity(
    exported: dict[str, Path],
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
    batch: int,
) -> None:
    model = grid_model[0]
    pixels = extractor.preprocess(_images(batch, seed=10 + batch))
    slots, boxes = _session(exported[PIXELS_MODEL]).run(None, {PIXELS: pixels.numpy()})
    cells = extractor.boxes()
    with torch.no_grad():
        features = extractor(pixels)
        counts = torch.full((batch,), cells.shape[0], dtype=torch.long)
        ref = model.encode_image(features, cells.expand(batch, -1, -1), counts)
    assert _check_slots(slots, ref.slots, extractor.grid**2) <= TOL
    assert boxes.shape == (batch, extractor.grid**2, 4)
    assert np.array_equal(boxes, cells.expand(batch, -1, -1).numpy())


# --- repository and checkpoints -----------------------------------------------------------


def _config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_config_pbtxt_for_both_backends(
    python_repo: Path,
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
    exported: dict[str, Path],
    tmp_path: Path,
) -> None:
    model = grid_model[0]
    ort_repo = tmp_path / "repo-ort"
    build_repository(model, ort_repo, extractor, "onnxruntime", version=3, gpu=True, files=exported)
    for repo, backend, kind, version in (
        (python_repo, "python", model_config_pb2.ModelInstanceGroup.KIND_CPU, 1),
        (ort_repo, "onnxruntime", model_config_pb2.ModelInstanceGroup.KIND_GPU, 3),
    ):
        text = _config(repo / TEXT_MODEL)
        assert text.name == TEXT_MODEL and text.backend == backend
        assert text.max_batch_size == 64
        assert [i.name for i in text.input] == [TOKEN_IDS, LENGTHS]
        assert text.input[0].data_type == model_config_pb2.TYPE_INT64
        assert list(text.input[0].dims) == [-1]
        assert list(text.input[1].dims) == [1] and text.input[1].HasField("reshape")
        assert list(text.input[1].reshape.shape) == []
        assert list(text.output[0].dims) == [-1, model.cfg.embed_dim]
        assert text.instance_group[0].kind == kind
        assert max(text.dynamic_batching.preferred_batch_size) <= text.max_batch_size
        assert text.dynamic_batching.max_queue_delay_microseconds > 0
        image = _config(repo / IMAGE_MODEL)
        assert image.max_batch_size == 32
        assert list(image.input[0].dims) == [-1, model.cfg.vision.feat_dim]
        pixels = _config(repo / PIXELS_MODEL)
        side = extractor.cfg.image_size
        assert list(pixels.input[0].dims) == [3, side, side]
        assert list(pixels.output[1].dims) == [extractor.grid**2, 4]
        files = sorted(p.name for p in (repo / TEXT_MODEL / str(version)).iterdir())
        assert files == (["model.onnx", "model.py"] if backend == "python" else ["model.onnx"])
    source = Path(tpm.__file__).read_text()
    assert (python_repo / IMAGE_MODEL / "1" / "model.py").read_text() == source
    manifest = read_manifest(ort_repo)
    assert manifest["model_version"] == 3 and manifest["backend"] == "onnxruntime"
    assert manifest["embed_dim"] == model.cfg.embed_dim
    assert manifest["feat_dim"] == extractor.feat_dim and manifest["grid"] == extractor.grid
    assert manifest["models"][IMAGE_MODEL]["inputs"][2] == {
        "name": N_REGIONS,
        "dtype": "int64",
        "dims": [],
    }
    assert json.loads((python_repo / MANIFEST_FILE).read_text())["checkpoint"] == {"run": "test"}


def test_name_prefix_renames_every_served_model(
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
    exported: dict[str, Path],
    python_repo: Path,
    tmp_path: Path,
) -> None:
    """Folders, config.pbtxt names and the manifest's names carry the prefix; the contracts
    (tensors, batch limits) stay those of the unprefixed repository."""
    model = grid_model[0]
    repo = tmp_path / "repo-next"
    folders = build_repository(model, repo, extractor, "python", files=exported, name_prefix="v2-")
    names = (TEXT_MODEL, IMAGE_MODEL, PIXELS_MODEL)
    assert {name: folder.name for name, folder in folders.items()} == {n: f"v2-{n}" for n in names}
    assert {p.name for p in repo.iterdir()} == {f"v2-{n}" for n in names} | {MANIFEST_FILE}
    for name in names:
        ours, theirs = _config(repo / f"v2-{name}"), _config(python_repo / name)
        assert ours.name == f"v2-{name}" and theirs.name == name
        theirs.name = ours.name
        assert ours == theirs
    manifest, plain = read_manifest(repo), read_manifest(python_repo)
    assert manifest["name_prefix"] == "v2-" and plain["name_prefix"] == ""
    assert (manifest["text_model"], manifest["image_model"], manifest["pixels_model"]) == tuple(
        f"v2-{n}" for n in names
    )
    assert manifest["models"] == {f"v2-{n}": spec for n, spec in plain["models"].items()}


@pytest.mark.parametrize("prefix", ["-next", "_next", "next.", "a/b", "n" * 33, "next\n", " "])
def test_bad_name_prefix_is_refused_before_writing(
    grid_model: tuple[Teran, SentenceTokenizer], prefix: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(prefix))):
        build_repository(grid_model[0], tmp_path / "repo", name_prefix=prefix)
    assert not (tmp_path / "repo").exists()
    result = CliRunner().invoke(
        export_cli, [str(tmp_path / "ckpt"), str(tmp_path / "repo"), f"--name-prefix={prefix}"]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for --name-prefix" in result.output, result.output
    assert not (tmp_path / "repo").exists()


def test_python_model_refuses_out_of_range_counts() -> None:
    """Its checks name the tensors teran.export declares (it cannot import teran in Triton)."""
    assert tpm.COUNT_CHECKS == {LENGTHS: (TOKEN_IDS, 2), N_REGIONS: (FEATURES, 1)}
    ids = np.zeros((2, 6), dtype=np.int64)
    tpm.check_counts({TOKEN_IDS: ids, LENGTHS: np.array([2, 6])})
    for bad in ([1, 4], [3, 7]):
        with pytest.raises(ValueError, match="LENGTHS must lie in"):
            tpm.check_counts({TOKEN_IDS: ids, LENGTHS: np.array(bad)})
    with pytest.raises(ValueError, match="N_REGIONS"):
        tpm.check_counts({FEATURES: np.zeros((1, 4, 3)), N_REGIONS: np.array([0])})


def test_pixels_extractor_follows_the_model_then_the_checkpoint_meta(
    grid_model: tuple[Teran, SentenceTokenizer],
) -> None:
    model = grid_model[0]
    extractor, message = pick_extractor(model, {})
    assert extractor is not None and extractor.feat_dim == model.cfg.vision.feat_dim
    assert "7x7" in message
    # the model's own extractor config wins over the checkpoint's meta
    extractor, message = pick_extractor(model, {"extractor": {"stage": "head"}})
    assert extractor is not None and "7x7" in message
    own, model.cfg.vision.extractor = model.cfg.vision.extractor, None
    try:  # a model without one (e.g. imported) falls back to the meta
        extractor, message = pick_extractor(model, {"extractor": {"stage": "head"}})
    finally:
        model.cfg.vision.extractor = own
    assert extractor is None and "1280-d" in message and "skipped" in message
    with pytest.raises(ValueError, match="python backend runs onnxruntime on CPU"):
        build_repository(model, Path("unused"), backend="python", gpu=True)


def test_reference_checkpoint_round_trip(reference_dir: Path, tmp_path: Path) -> None:
    """Reference .pth.tar -> our checkpoint -> `trainer.export` CLI -> ONNX that gives
    PyTorch's vectors and the reference implementation's."""
    fixture = Fixture.load(reference_dir / "teran-tiny")
    model, tokenizer, _ = import_reference_checkpoint(fixture.folder / "checkpoint.pth.tar")
    checkpoint = save_checkpoint(model, tokenizer, tmp_path / "ckpt", meta={"source": "fixture"})
    repo = tmp_path / "repo"
    result = CliRunner().invoke(
        export_cli, [str(checkpoint), str(repo), "--backend", "onnxruntime", "--version", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "pixels model skipped" in result.output  # 96-d fixture regions, 320-d grid cells
    assert "parity (max |ONNX - PyTorch|)" in result.output
    assert {p.name for p in repo.iterdir()} == {IMAGE_MODEL, TEXT_MODEL, MANIFEST_FILE}
    manifest = read_manifest(repo)
    assert manifest["checkpoint"]["meta"] == {"source": "fixture"}
    assert manifest["pixels_model"] is None and manifest["feat_dim"] == 96
    assert _config(repo / TEXT_MODEL).backend == "onnxruntime"
    files = {name: repo / name / "2" / "model.onnx" for name in (TEXT_MODEL, IMAGE_MODEL)}
    exp = fixture.expected
    tokens = tokenizer(fixture.captions)
    (words,) = _session(files[TEXT_MODEL]).run(
        None, {TOKEN_IDS: tokens.ids.numpy(), LENGTHS: tokens.lengths.numpy()}
    )
    (slots,) = _session(files[IMAGE_MODEL]).run(
        None, {FEATURES: fixture.features, BOXES: fixture.boxes, N_REGIONS: fixture.n_regions}
    )
    with torch.no_grad():
        ref_words = model.encode_text(tokens.ids, tokens.lengths).tokens
        ref_slots = model.encode_image(
            torch.from_numpy(fixture.features),
            torch.from_numpy(fixture.boxes),
            torch.from_numpy(fixture.n_regions),
        ).slots
    assert np.abs(words - ref_words.numpy()).max() <= TOL
    assert _check_slots(slots, ref_slots, fixture.features.shape[1]) <= TOL
    for ours, theirs, lengths in (
        (words, exp["cap_emb"], exp["cap_len"]),
        (slots, exp["img_emb"], exp["img_len"]),
    ):
        for row, n in enumerate(lengths):
            assert np.abs(ours[row, :n] - theirs[row, :n]).max() <= TOL


def test_shared_transformer_tower_uses_the_text_head(reference_dir: Path) -> None:
    """sharedTE models run the image side through the text head: the tower must too (its
    export is the same graph as the separate-head one tested above, so eager suffices)."""
    fixture = Fixture.load(reference_dir / "teran-tiny-shared")
    model, _, _ = import_reference_checkpoint(fixture.folder / "checkpoint.pth.tar")
    assert model.image_head is None
    with torch.no_grad():
        slots = (
            ImageTower(model)
            .eval()(
                torch.from_numpy(fixture.features),
                torch.from_numpy(fixture.boxes),
                torch.from_numpy(fixture.n_regions),
            )
            .numpy()
        )
    for row, n in enumerate(fixture.expected["img_len"]):
        assert np.abs(slots[row, :n] - fixture.expected["img_emb"][row, :n]).max() <= TOL


def test_check_parity_catches_a_different_model(
    exported: dict[str, Path],
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
) -> None:
    model, tokenizer = grid_model
    text_only = {TEXT_MODEL: exported[TEXT_MODEL]}
    assert check_parity(model, text_only, tokenizer)[TEXT_MODEL] <= TOL
    torch.manual_seed(1)  # same shapes, other heads: the ONNX files no longer match it
    other, _ = create_model(model.cfg)
    with pytest.raises(ValueError, match="differs from PyTorch"):
        check_parity(other, text_only, tokenizer)


# --- a real tritonserver ------------------------------------------------------------------


def _inputs(feeds: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in feeds.items():
        item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def test_tritonserver_serves_the_python_repository(
    python_repo: Path,
    grid_model: tuple[Teran, SentenceTokenizer],
    extractor: GridRegionExtractor,
) -> None:
    model, tokenizer = grid_model
    tokens = tokenizer(SENTENCES)
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(2, 7, model.cfg.vision.feat_dim, generator=gen).relu()
    boxes = torch.rand(2, 7, 4, generator=gen)
    counts = torch.tensor([7, 4])
    pixels = extractor.preprocess(_images(2, seed=3))
    with torch.no_grad():
        words = model.encode_text(tokens.ids, tokens.lengths).tokens.numpy()
        regions = model.encode_image(features, boxes, counts).slots
        cells = extractor.boxes().expand(2, -1, -1)
        grid = model.encode_image(extractor(pixels), cells, torch.full((2,), cells.shape[1])).slots
    start = time.perf_counter()
    with TritonServer(python_repo) as server:
        startup = time.perf_counter() - start
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_server_ready()
        for name in (TEXT_MODEL, IMAGE_MODEL, PIXELS_MODEL):
            assert client.is_model_ready(name)
        ids, lengths = tokens.ids.numpy(), tokens.lengths.numpy()[:, None]  # [B, 1]: see dims
        text_feeds = {TOKEN_IDS: ids, LENGTHS: lengths}
        result = client.infer(TEXT_MODEL, _inputs(text_feeds), client_timeout=30)
        assert np.abs(result.as_numpy(WORD_EMBEDDINGS) - words).max() <= TOL
        image_feeds = {
            FEATURES: features.numpy(),
            BOXES: boxes.numpy(),
            N_REGIONS: counts.numpy()[:, None],
        }
        result = client.infer(IMAGE_MODEL, _inputs(image_feeds), client_timeout=30)
        assert _check_slots(result.as_numpy(REGION_EMBEDDINGS), regions, 7) <= TOL
        result = client.infer(PIXELS_MODEL, _inputs({PIXELS: pixels.numpy()}), client_timeout=30)
        assert _check_slots(result.as_numpy(REGION_EMBEDDINGS), grid, extractor.grid**2) <= TOL
        assert np.array_equal(result.as_numpy(REGION_BOXES), cells.numpy())

        # bad requests fail fast with a reason; none of them hangs or takes the model down
        bad = [
            (TEXT_MODEL, {TOKEN_IDS: ids.astype(np.int32), LENGTHS: lengths}, "INT32"),
            (IMAGE_MODEL, {**image_feeds, FEATURES: features.numpy()[..., :100]}, "shape"),
            (TEXT_MODEL, {TOKEN_IDS: ids, LENGTHS: lengths + 100}, "LENGTHS must lie in"),
        ]
        for name, feeds, reason in bad:
            t0 = time.perf_counter()
            with pytest.raises(InferenceServerException, match=reason):
                client.infer(name, _inputs(feeds), client_timeout=10)
            assert time.perf_counter() - t0 < 5

        # concurrent same-shape requests, which Triton batches into one execute call: each gets
        # its own vectors, and the one bad request among them fails alone
        answers: queue.Queue[tuple[int, object]] = queue.Queue()
        single = tokenizer([SENTENCES[1]])
        bad_index = 4
        for index in range(10):
            sizes = single.lengths.numpy()[:, None] + (50 if index == bad_index else 0)
            client.async_infer(
                TEXT_MODEL,
                _inputs({TOKEN_IDS: single.ids.numpy(), LENGTHS: sizes}),
                lambda result, error, index=index: answers.put((index, error or result)),
                client_timeout=30,
            )
        n = int(single.lengths[0])
        for _ in range(10):
            index, answer = answers.get(timeout=30)
            if index == bad_index:
                assert isinstance(answer, InferenceServerException), answer
                assert "LENGTHS must lie in" in str(answer)
                continue
            assert isinstance(answer, grpcclient.InferResult), answer
            assert np.abs(answer.as_numpy(WORD_EMBEDDINGS)[0, :n] - words[1, :n]).max() <= TOL
        # Triton updates its statistics after the responses go out, so a reader may briefly lag
        deadline, counted = time.monotonic() + 10, 0
        while counted < 12 and time.monotonic() < deadline:
            stats = client.get_inference_statistics(TEXT_MODEL, as_json=True)["model_stats"][0]
            counted = int(stats.get("inference_count", 0))
            time.sleep(0.05)
        assert counted >= 12  # at least the 3 + 9 good rows
        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            metrics = response.read().decode()
        assert f'nv_inference_request_success{{model="{TEXT_MODEL}"' in metrics
        client.close()
    assert not server.running
    assert startup < 30, f"tritonserver took {startup:.1f}s to become ready"


def test_tritonserver_start_failure_reports_the_log(tmp_path: Path) -> None:
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nthis is not pbtxt\n')
    server = TritonServer(tmp_path / "repo", startup_timeout=30)
    with pytest.raises(TritonStartError, match="tritonserver") as info:
        server.start()
    assert "failed to read text proto" in str(info.value)  # the cause, from the log
    assert not server.running
