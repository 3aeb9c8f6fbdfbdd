"""`make refcheck FIXTURE=DIR`: does this project compute what the reference TERAN computes?

Imports the fixture's reference checkpoint, encodes its inputs with this project's encoders and
compares every quantity the fixture format lists, failing above the tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from teran.fixtures import TOLERANCE, Fixture, compare, run_fixture

app = typer.Typer(add_completion=False)


def check(fixture_dir: Path, backbone: str | None = None, tolerance: float = TOLERANCE) -> bool:
    """Print the comparison table; True when every difference is within `tolerance`."""
    fixture = Fixture.load(fixture_dir)
    diffs = compare(fixture, run_fixture(fixture, backbone))
    table = Table(title=f"TERAN parity: {fixture_dir}")
    table.add_column("quantity")
    table.add_column("max |diff|", justify="right")
    table.add_column(f"<= {tolerance:g}")
    ok = True
    for name, value in diffs.items():
        passed = value <= tolerance
        ok &= passed
        table.add_row(name, f"{value:.3g}", "ok" if passed else "FAIL")
    Console().print(table)
    return ok


@app.command()
def main(
    fixtures: Annotated[list[Path], typer.Argument(help="fixture folders")],
    backbone: Annotated[
        str | None, typer.Option(help="backbone folder (default: the fixture's own)")
    ] = None,
    tolerance: float = TOLERANCE,
) -> None:
    results = [check(folder, backbone, tolerance) for folder in fixtures]
    if not all(results):
        typer.echo("parity check FAILED", err=True)
        raise typer.Exit(1)
    typer.echo(f"parity check passed on {len(results)} fixture(s)")


def cli() -> None:
    app()


if __name__ == "__main__":
    cli()
