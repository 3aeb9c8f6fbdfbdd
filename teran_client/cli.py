"""`python -m teran_client --address HOST:PORT COMMAND`: the platform from a shell.

Commands: `ingest DIR` (a folder's images, with a progress bar), `search "SENTENCE"`, `stats`,
`delete ID...`. Exit status: 0 done, 1 some items failed, 2 the call failed (the server's
message is printed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from teran_client.channels import ChannelSecurity
from teran_client.client import TeranClient
from teran_client.messages import folder_items
from teran_client.results import IngestResult, Scalar, SearchResult, TeranError

app = typer.Typer(add_completion=False, no_args_is_help=True)


def parse_value(text: str) -> Scalar:
    """`3` -> 3, `2.5` -> 2.5, `true` -> True, anything else stays a string, so shell users
    need no quoting for the common cases."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, list[Scalar]]:
    """`key=value` strings -> key -> values, in order (a repeated key collects values)."""
    out: dict[str, list[Scalar]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint=option)
        out.setdefault(key, []).append(parse_value(value))
    return out


def _client(ctx: typer.Context) -> TeranClient:
    client: TeranClient = ctx.obj
    return client


def _fail(err: TeranError) -> typer.Exit:
    Console(stderr=True).print(f"[red]error[/red] {err.code.name}: {err.message}", markup=True)
    return typer.Exit(2)


@app.callback()
def main(
    ctx: typer.Context,
    address: Annotated[
        str, typer.Option(envvar="TERAN_ADDRESS", help="the server, HOST:PORT")
    ] = "127.0.0.1:50051",
    timeout: Annotated[float, typer.Option(help="deadline of each call, seconds")] = 30.0,
    api_key: Annotated[
        str | None, typer.Option(envvar="TERAN_API_KEY", help="sent as 'Bearer <key>'")
    ] = None,
    tls: Annotated[bool, typer.Option(help="use TLS (implied by --ca-file/--cert-file)")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="PEM roots of the server's cert")] = None,
    cert_file: Annotated[Path | None, typer.Option(help="client certificate (mTLS)")] = None,
    key_file: Annotated[Path | None, typer.Option(help="client certificate's key")] = None,
    server_name: Annotated[
        str | None, typer.Option(help="name the server's certificate carries")
    ] = None,
) -> None:
    """Talk to a TERAN retrieval server. Exit status: 0 done, 1 some items failed, 2 the call
    failed (the server's message is printed)."""
    security = ChannelSecurity(api_key, tls, ca_file, cert_file, key_file, server_name)
    ctx.obj = TeranClient(address, timeout_s=timeout, security=security)
    ctx.call_on_close(ctx.obj.close)


@app.command()
def ingest(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="folder of images; ids are relative paths")],
    payload: Annotated[
        list[str] | None, typer.Option("--payload", "-p", help="key=value added to every image")
    ] = None,
    window: Annotated[int, typer.Option(min=1, help="unacknowledged items in flight")] = 64,
    recursive: Annotated[bool, typer.Option(help="descend into sub-folders")] = True,
) -> None:
    """Stream a folder's images into the collection."""
    pairs = parse_pairs(payload or [], "--payload")
    fields: dict[str, Any] = {k: v[-1] for k, v in pairs.items()}
    try:
        items = folder_items(folder, fields, recursive)
    except NotADirectoryError as err:
        raise typer.BadParameter(str(err), param_hint="FOLDER") from None
    console = Console()
    failures: list[IngestResult] = []
    stored = 0
    columns = (
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("ingest", total=len(items))
            for result in _client(ctx).ingest(items, window=window):
                if result.stored:
                    stored += 1
                else:
                    failures.append(result)
                progress.advance(task)
    except TeranError as err:
        raise _fail(err) from None
    console.print(f"stored {stored}, failed {len(failures)} (of {len(items)} images)")
    for f in failures:
        console.print(f"  {f.id}: {f.status}: {f.message}", markup=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)


def print_search(console: Console, query: str, result: SearchResult, explain: bool) -> None:
    """Ranked hits as a table; with `explain`, each hit's word -> region alignment."""
    table = Table(title=f"{query!r}: {len(result.hits)} hits  (model {result.model_version})")
    table.add_column("#", justify="right")
    table.add_column("id", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("payload", overflow="fold")
    if explain:
        table.add_column("word -> region (similarity)", overflow="fold")
    for rank, hit in enumerate(result.hits, 1):
        row = [str(rank), hit.id, f"{hit.score:.4f}", json.dumps(hit.payload, sort_keys=True)]
        if explain:
            row.append(
                "  ".join(f"{a.word}->{a.region} ({a.similarity:.2f})" for a in hit.alignment)
            )
        table.add_row(*row)
    console.print(table)
    if explain:
        console.print(f"aligned words: {' '.join(result.words)}", markup=False)


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="a sentence describing the images")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="how many hits")] = 10,
    offset: Annotated[int, typer.Option(help="skip this many hits (paging)")] = 0,
    explain: Annotated[bool, typer.Option(help="show each word's best region")] = False,
    filter: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="key=value; a repeated key matches any value"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Images for a sentence, best first."""
    pairs = parse_pairs(filter or [], "--filter")
    spec = {k: v[0] if len(v) == 1 else v for k, v in pairs.items()}
    try:
        result = _client(ctx).search(query, top_k, offset, spec or None, explain)
    except TeranError as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "words": result.words,
                    "model_version": result.model_version,
                    "hits": [
                        {
                            "id": h.id,
                            "score": h.score,
                            "uri": h.uri,
                            "payload": h.payload,
                            "alignment": [
                                {
                                    "word": a.word,
                                    "region": a.region,
                                    "box": list(a.box),
                                    "similarity": a.similarity,
                                }
                                for a in h.alignment
                            ],
                        }
                        for h in result.hits
                    ],
                },
                indent=2,
            )
        )
        return
    print_search(Console(), query, result, explain)


@app.command()
def stats(ctx: typer.Context) -> None:
    """Collection sizes and the served model."""
    try:
        s = _client(ctx).stats()
    except TeranError as err:
        raise _fail(err) from None
    typer.echo(f"images: {s.images}")
    typer.echo(f"sentences: {s.sentences}")
    typer.echo(f"model: {s.model_version}")
    typer.echo(f"collections: {s.image_collection}, {s.sentence_collection}")


@app.command()
def delete(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="ids to remove")],
    sentences: Annotated[bool, typer.Option(help="the ids are sentence ids")] = False,
) -> None:
    """Remove images (or sentences) by id; unknown ids are listed, not an error."""
    try:
        if sentences:
            result = _client(ctx).delete(sentence_ids=ids)
        else:
            result = _client(ctx).delete(image_ids=ids)
    except TeranError as err:
        raise _fail(err) from None
    typer.echo(f"deleted {result.deleted}")
    if result.not_found:
        typer.echo(f"not found: {', '.join(result.not_found)}")


@app.command()
def health(ctx: typer.Context) -> None:
    """Exit 0 when the server reports SERVING, 1 otherwise."""
    serving = _client(ctx).health()
    typer.echo("SERVING" if serving else "NOT_SERVING")
    if not serving:
        raise typer.Exit(1)
