"""Import a reference TERAN `.pth.tar` and save it in this project's checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from teran.checkpoint import import_reference_checkpoint, save_checkpoint

app = typer.Typer(add_completion=False)


@app.command()
def main(
    reference: Annotated[Path, typer.Argument(help="reference checkpoint (.pth.tar)")],
    output: Annotated[Path, typer.Argument(help="folder to write the checkpoint to")],
    backbone: Annotated[
        str | None,
        typer.Option(help="backbone folder, e.g. your bert-base-uncased (default: from config)"),
    ] = None,
    trusted: Annotated[
        bool, typer.Option(help="allow arbitrary pickles: only for files of known origin")
    ] = False,
) -> None:
    model, tokenizer, report = import_reference_checkpoint(reference, backbone, trusted)
    save_checkpoint(
        model, tokenizer, output, meta={"imported_from": str(reference), "ignored": report.ignored}
    )
    params = sum(p.numel() for p in model.parameters())
    typer.echo(
        f"imported {report.mapped} tensors ({params:,} parameters; ignored {len(report.ignored)} "
        f"unused: {', '.join(report.ignored)}) with backbone {report.backbone} -> {output}"
    )


def cli() -> None:
    app()


if __name__ == "__main__":
    cli()
