"""Export a checkpoint to a Triton model repository (ONNX encoders, config.pbtxt, manifest).

    python -m trainer.export CHECKPOINT_DIR REPO_DIR [--backend python|onnxruntime] [--version 1]
        [--pixels/--no-pixels] [--gpu] [--check/--no-check] [--name-prefix next_]

The pixels model uses the grid extractor from the checkpoint's `meta.extractor` (ExtractorCfg
fields) or the default one; it is skipped, with a message, when that extractor's feature width
is not the model's `vision.feat_dim` (e.g. a model trained on 2048-d detector regions).

`--name-prefix next_` serves the models as `next_teran_text_encoder` etc., so that this
repository and another model's can be given to one tritonserver (two `--model-repository`
paths) during an upgrade; the manifest names them for the services.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from teran.checkpoint import load_checkpoint, model_version, read_header
from teran.export import ONNX_FILE, check_parity
from teran.model import Teran
from teran.regions import ExtractorCfg, GridRegionExtractor
from teran.triton_repo import MANIFEST_FILE, build_repository, check_name_prefix

app = typer.Typer(add_completion=False)


class Backend(StrEnum):
    python = "python"
    onnxruntime = "onnxruntime"


def pick_extractor(model: Teran, meta: dict[str, Any]) -> tuple[GridRegionExtractor | None, str]:
    """The extractor the model was trained with (its config, else the checkpoint's meta), or
    None with the reason it does not fit."""
    cfg = model.cfg.vision.extractor or ExtractorCfg(**meta.get("extractor", {}))
    extractor = GridRegionExtractor(cfg)
    if extractor.feat_dim != model.cfg.vision.feat_dim:
        return None, (
            f"pixels model skipped: {cfg.variant} ({cfg.stage}) gives {extractor.feat_dim}-d "
            f"features, the model reads vision.feat_dim={model.cfg.vision.feat_dim}"
        )
    return (
        extractor,
        f"pixels model: {cfg.variant} ({cfg.stage}), {extractor.grid}x{extractor.grid}",
    )


@app.command()
def main(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder (teran_config.json)")],
    repo: Annotated[Path, typer.Argument(help="Triton model repository to write into")],
    backend: Annotated[
        Backend, typer.Option(help="python: any Triton (CPU); onnxruntime: NVIDIA's images")
    ] = Backend.python,
    version: Annotated[int, typer.Option(min=1, help="model version folder to write")] = 1,
    pixels: Annotated[bool, typer.Option(help="also export the pixels-to-vectors model")] = True,
    gpu: Annotated[bool, typer.Option(help="KIND_GPU instances (onnxruntime only)")] = False,
    check: Annotated[bool, typer.Option(help="compare ONNX with PyTorch after export")] = True,
    name_prefix: Annotated[
        str,
        typer.Option(
            help="prefix of the served model names (e.g. next_), so that two repositories can "
            "share one tritonserver"
        ),
    ] = "",
) -> None:
    if gpu and backend is Backend.python:
        raise typer.BadParameter("--gpu needs --backend onnxruntime (python runs on CPU)")
    try:
        check_name_prefix(name_prefix)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--name-prefix") from err
    header = read_header(checkpoint)
    meta: dict[str, Any] = dict(header.get("meta") or {})
    model, tokenizer = load_checkpoint(checkpoint)
    extractor = None
    if pixels:
        extractor, message = pick_extractor(model, meta)
        typer.echo(message)
    folders = build_repository(
        model,
        repo,
        extractor=extractor,
        backend=backend.value,
        version=version,
        gpu=gpu,
        meta={
            "path": str(checkpoint.resolve()),
            "meta": meta,
            "model_version": model_version(checkpoint),
        },
        name_prefix=name_prefix,
    )
    if check:
        files = {name: folder / str(version) / ONNX_FILE for name, folder in folders.items()}
        report = check_parity(model, files, tokenizer, extractor)
        typer.echo(
            "parity (max |ONNX - PyTorch|): "
            + ", ".join(f"{name} {diff:.1e}" for name, diff in report.items())
        )
    served = ", ".join(sorted(folder.name for folder in folders.values()))
    typer.echo(
        f"wrote {served} (version {version}, {backend.value} backend) and {MANIFEST_FILE} to {repo}"
    )


def cli() -> None:
    app()


if __name__ == "__main__":
    cli()
