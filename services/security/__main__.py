"""`python -m services.security new-key --name web --roles search --keys-file keys.yaml`:
create a key, append its hash and roles to the keys file (which a running server re-reads),
and print the key, once; it is not stored anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from services.security.keys import Role, hash_key, new_key, parse_keys

cli = typer.Typer(add_completion=False, no_args_is_help=True)


@cli.command("new-key")
def new_key_command(
    name: Annotated[str, typer.Option(help="who holds the key (unique in the file)")],
    roles: Annotated[
        str, typer.Option(help=f"comma-separated: {', '.join(r.value for r in Role)}")
    ],
    keys_file: Annotated[Path, typer.Option(help="the file server.auth.keys_file names")],
    rate_per_s: Annotated[float | None, typer.Option(help="requests per second")] = None,
    burst: Annotated[int | None, typer.Option(help="requests in a burst")] = None,
) -> None:
    try:
        wanted = sorted({Role(r.strip()).value for r in roles.split(",") if r.strip()})
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--roles") from err
    doc = (yaml.safe_load(keys_file.read_text()) if keys_file.exists() else None) or {}
    entries = list(doc.get("keys") or [])
    if any(e.get("name") == name for e in entries):
        raise typer.BadParameter(
            f"{keys_file} already has a key named {name!r}", param_hint="--name"
        )
    key = new_key()
    entry: dict[str, object] = {"name": name, "sha256": hash_key(key), "roles": wanted}
    if rate_per_s is not None:
        entry["rate_per_s"] = rate_per_s
    if burst is not None:
        entry["burst"] = burst
    doc["keys"] = [*entries, entry]
    text = yaml.safe_dump(doc, sort_keys=False)
    parse_keys(text, str(keys_file))  # what the server will read
    tmp = keys_file.with_name(keys_file.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(keys_file)  # atomic: a server re-reading it never sees half a file
    typer.echo(key)


@cli.command("hash")
def hash_command(key: Annotated[str, typer.Argument(help="an existing key")]) -> None:
    """The sha256 line for an existing key (e.g. to write a Kubernetes Secret by hand)."""
    typer.echo(hash_key(key))


if __name__ == "__main__":
    cli()
