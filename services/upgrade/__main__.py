"""`python -m services.upgrade`: the model-upgrade command (also the chart's upgrade Job).

    python -m services.upgrade [SECURITY] status --address HOST:PORT
    python -m services.upgrade [SECURITY] run --address HOST:PORT [--to VERSION] [--grace-s 5]
        [--no-switch] [--wait-rollout --namespace NS --selector app.kubernetes.io/instance=R]
    python -m services.upgrade [SECURITY] drop --address HOST:PORT --version VERSION

HOST:PORT is a server hosting the Admin service: the image encoder, or the single process.
SECURITY, before the command: `--api-key` (or env TERAN_API_KEY; a key with the admin role) and
`--tls`, `--ca-file`, `--cert-file`/`--key-file` (mTLS), `--server-name`, as teran_client takes.
With --wait-rollout the command first waits (Kubernetes API, the pod's service account) until
every Deployment and StatefulSet of the release has rolled out, so that every replica loads the
new version before the aliases move. Exit status: 0 done, 1 the upgrade failed, 2 bad usage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import grpc
import typer

from teran_client.channels import ChannelSecurity, open_channel
from teran_protos.v1 import admin_pb2 as pb
from teran_protos.v1 import admin_pb2_grpc as pb_grpc

app = typer.Typer(add_completion=False, no_args_is_help=True)
PHASES = {value: name.lower() for name, value in pb.UpgradeProgress.Phase.items()}
REPORT_EVERY_S = 5.0

Address = Annotated[str, typer.Option(help="HOST:PORT of the Admin service")]


def _pem(help: str) -> typer.models.OptionInfo:
    return typer.Option(exists=True, dir_okay=False, help=help)


@app.callback()
def channel_security(
    ctx: typer.Context,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TERAN_API_KEY", help="a key with the admin role, sent as Bearer"),
    ] = None,
    tls: Annotated[bool, typer.Option(help="TLS; implied by --ca-file and --cert-file")] = False,
    ca_file: Annotated[Path | None, _pem("PEM roots that signed the server's certificate")] = None,
    cert_file: Annotated[Path | None, _pem("this client's certificate (mTLS)")] = None,
    key_file: Annotated[Path | None, _pem("the client certificate's key")] = None,
    server_name: Annotated[
        str | None, typer.Option(help="the name in the server's certificate, if not the host")
    ] = None,
) -> None:
    """Run and inspect model upgrades through the Admin service."""
    if (cert_file is None) != (key_file is None):
        raise typer.BadParameter(
            "give --cert-file and --key-file together", param_hint="--cert-file"
        )
    # a key read from a file or a Secret often ends in a newline, which metadata cannot carry
    key = (api_key or "").strip() or None
    ctx.obj = ChannelSecurity(key, tls, ca_file, cert_file, key_file, server_name)


def _stub(ctx: typer.Context, address: str) -> pb_grpc.AdminStub:
    return pb_grpc.AdminStub(open_channel(address, ctx.find_object(ChannelSecurity)))


def _fail(err: grpc.RpcError) -> typer.Exit:
    typer.echo(f"error {err.code().name}: {err.details()}", err=True)
    return typer.Exit(1)


@app.command()
def status(ctx: typer.Context, address: Address = "127.0.0.1:50051") -> None:
    """The live version and every version loaded here or held by the store."""
    try:
        reply = _stub(ctx, address).Status(pb.StatusRequest(), timeout=60)
    except grpc.RpcError as err:
        raise _fail(err) from err
    typer.echo(
        f"live {reply.live_version}; sources: {reply.image_sources} images, "
        f"{reply.sentence_sources} sentences"
    )
    for v in reply.versions:
        flags = ", ".join(
            name
            for name, on in (("live", v.live), ("loaded", v.loaded), ("stored", v.stored))
            if on
        )
        counts = f"{v.images} images, {v.sentences} sentences" if v.stored else "no collections"
        typer.echo(f"  {v.model_version}  [{flags}]  {counts}")


@app.command()
def run(
    ctx: typer.Context,
    address: Address = "127.0.0.1:50051",
    to: Annotated[
        str, typer.Option(help="version to move to; empty: the loaded version that is not live")
    ] = "",
    grace_s: Annotated[
        float, typer.Option(min=0, help="wait between the switch and the final catch-up")
    ] = 5.0,
    switch: Annotated[bool, typer.Option(help="switch the aliases once re-encoded")] = True,
    wait_rollout: Annotated[
        bool, typer.Option(help="first wait for the release's rollouts (Kubernetes API)")
    ] = False,
    namespace: Annotated[str, typer.Option(help="with --wait-rollout")] = "default",
    selector: Annotated[str, typer.Option(help="label selector of the release's workloads")] = "",
    rollout_timeout_s: Annotated[float, typer.Option(min=1)] = 900.0,
) -> None:
    """Re-encode every stored item with a model version, then make it live."""
    if wait_rollout:
        from services.upgrade.rollout import wait_for_rollouts

        if not selector:
            raise typer.BadParameter("--wait-rollout needs --selector", param_hint="--selector")
        names = wait_for_rollouts(namespace, selector, timeout_s=rollout_timeout_s)
        typer.echo(f"rolled out: {', '.join(names)}")
    request = pb.UpgradeRequest(model_version=to, grace_seconds=grace_s, no_switch=not switch)
    last: tuple[int, int] | None = None
    reported = 0.0
    try:
        for p in _stub(ctx, address).Upgrade(request):
            now = time.monotonic()
            if (p.phase, p.total) != last or now - reported >= REPORT_EVERY_S or p.done == p.total:
                live = f" (live: {p.live_version})" if p.live_version else ""
                typer.echo(f"{PHASES[p.phase]:<9} {p.model_version} {p.done}/{p.total}{live}")
                last, reported = (p.phase, p.total), now
    except grpc.RpcError as err:
        raise _fail(err) from err


@app.command()
def drop(
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="the version whose collections to delete")],
    address: Address = "127.0.0.1:50051",
) -> None:
    """Delete an old version's collections (never the live one)."""
    try:
        _stub(ctx, address).DropVersion(pb.DropVersionRequest(model_version=version), timeout=300)
    except grpc.RpcError as err:
        raise _fail(err) from err
    typer.echo(f"dropped {version}")


if __name__ == "__main__":
    app()
