"""`make bench-gateway`: the same searches through the HTTP/JSON gateway and through gRPC.

`python -m services --target all` in its own process (embedded store, in-process inference with
one torch thread, API keys on) with `--images` synthetic pictures stored. The query mix is
`benchmarks.bench_services.QUERIES` as `Search` with explanations (top_k 10), sent by 1 and by 8
concurrent clients: over gRPC through one shared channel (HTTP/2 multiplexes it), over HTTP as
`POST /v1/search` with one keep-alive connection per client, the JSON parsed as a client would.
The transports take turns in rounds (gRPC first, then HTTP first, ...) so that a slow spell of
the machine falls on both; each figure is from that one run: queries/s (calls over the wall
time), p50 and p99, and the gRPC/HTTP ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import torch
import yaml

from benchmarks.bench_load import Tally
from benchmarks.bench_services import QUERIES
from benchmarks.served import TORCH_THREADS, Server, run_clients
from services.security.keys import hash_key, new_key
from teran.checkpoint import model_version
from teran.data.synthetic import SyntheticScenes
from teran_dev.demo_data import png_bytes
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb

TOP_K = 10
TRANSPORTS = ("grpc", "http")
Call = Callable[[str], str]
"""One query sent, its outcome back: "OK" or the status's name."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--images", type=int, default=200, help="pictures stored before the load")
    p.add_argument("--clients", default="1,8", help="concurrent clients, comma-separated")
    p.add_argument("--seconds", type=float, default=30.0, help="per transport and client count")
    p.add_argument("--rounds", type=int, default=2, help="turns the seconds are split into")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="benchmarks/results/gateway.json")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def search_body(query: str) -> dict[str, Any]:
    """The one request both transports send: Search's fields, as proto3 JSON for HTTP."""
    return {"query": query, "top_k": TOP_K, "explain": True}


def grpc_calls(server: Server) -> Callable[[], Call]:
    """Every client on the server's one channel."""

    def make() -> Call:
        def call(query: str) -> str:
            try:
                server.ranker.Search(rpb.SearchRequest(**search_body(query)), timeout=30)
            except grpc.RpcError as err:
                return str(err.code().name)
            return "OK"

        return call

    return make


def post_search(conn: http.client.HTTPConnection, key: str, query: str) -> tuple[int, Any]:
    """POST /v1/search on a (keep-alive) connection: the status and the parsed JSON."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    conn.request("POST", "/v1/search", json.dumps(search_body(query)), headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)


def http_calls(url: str, key: str) -> Callable[[], Call]:
    """Each client with its own keep-alive connection (reopened if the gateway drops it)."""

    def make() -> Call:
        conn = connect(url)

        def call(query: str) -> str:
            nonlocal conn
            try:
                status, answer = post_search(conn, key, query)
            except (OSError, http.client.HTTPException, ValueError) as err:
                conn.close()
                conn = connect(url)
                return type(err).__name__
            if status != 200:
                return str(answer.get("error", {}).get("code", f"HTTP {status}"))
            return "OK"

        return call

    return make


def drive(make: Callable[[], Call], clients: int, seconds: float, tally: Tally) -> float:
    """`clients` threads sending the query mix for `seconds`; returns the wall time, from the
    start to the last answer."""
    stop_at = time.monotonic() + seconds
    calls = [make() for _ in range(clients)]

    def client(k: int) -> None:
        i = k
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            code = calls[k](QUERIES[i % len(QUERIES)])
            tally.add("Search", time.perf_counter() - t0, code)
            i += clients

    return run_clients(client, clients)


def figures(tally: Tally, wall_s: float) -> dict[str, Any]:
    summary = tally.summary().get("Search", {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "codes": {}})
    errors = sum(n for code, n in summary["codes"].items() if code != "OK")
    return {
        "calls": summary["count"],
        "qps": round(summary["count"] / wall_s, 2),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "errors": errors,
        "codes": summary["codes"],
    }


def measure(
    makers: dict[str, Callable[[], Call]], clients: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Both transports at one client count, taking turns; each one's calls pooled."""
    tallies = {name: Tally() for name in makers}
    walls = dict.fromkeys(makers, 0.0)
    for make in makers.values():  # warm-up: every query once, untimed
        warm = make()
        for query in QUERIES:
            warm(query)
    for r in range(rounds):
        order = list(makers) if r % 2 == 0 else list(reversed(makers))
        for name in order:
            walls[name] += drive(makers[name], clients, seconds / rounds, tallies[name])
    out: dict[str, Any] = {name: figures(tallies[name], walls[name]) for name in makers}
    grpc_, http_ = out["grpc"], out["http"]
    out["ratio"] = {
        "qps_grpc_over_http": round(grpc_["qps"] / http_["qps"], 3) if http_["qps"] else None,
        "p50_http_over_grpc": (
            round(http_["p50_ms"] / grpc_["p50_ms"], 3) if grpc_["p50_ms"] else None
        ),
    }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teran-gateway-"))
    workdir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    keys = workdir / "keys.yaml"
    entry = {"name": "bench", "sha256": hash_key(key), "roles": ["search", "ingest"]}
    keys.write_text(yaml.safe_dump({"keys": [entry]}))
    port = free_port()
    server = Server(
        workdir,
        args.checkpoint,
        workdir / "store",
        config={"server": {"auth": {"keys_file": str(keys)}}, "gateway": {"port": port}},
        api_key=key,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        scenes = SyntheticScenes(args.images, split="test", seed=29)
        items = (
            ipb.IngestItem(id=f"img{i}", image=png_bytes(scenes.image(i)))
            for i in range(args.images)
        )
        stored = sum(r.stored for r in igrpc.ImageEncoderStub(server.channel).Ingest(items))
        assert stored == args.images, f"stored {stored} of {args.images}"
        check_same_answers(server, url, key)
        makers = {"grpc": grpc_calls(server), "http": http_calls(url, key)}
        by_clients = {
            str(c): measure(makers, c, args.seconds, max(1, args.rounds)) for c in clients
        }
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": torch.get_num_threads(), "processor": platform.machine()},
        "model_version": model_version(Path(args.checkpoint)),
        "server": {
            "target": "all",
            "store": "edge",
            "inference.torch_threads": TORCH_THREADS,
            "auth": "api keys",
            "gateway": "uvicorn in the same process, gRPC to its own server on loopback",
        },
        "load": {
            "rpc": "Search",
            "queries": len(QUERIES),
            "top_k": TOP_K,
            "explain": True,
            "images": args.images,
            "seconds_per_transport": args.seconds,
            "rounds": max(1, args.rounds),
        },
        "clients": by_clients,
        "errors": sum(v[t]["errors"] for v in by_clients.values() for t in TRANSPORTS),
    }


def check_same_answers(server: Server, url: str, key: str) -> None:
    """The gateway answers what gRPC answers, before anything is timed."""
    conn = connect(url)
    status, answer = post_search(conn, key, QUERIES[0])
    conn.close()
    assert status == 200, answer
    direct = server.ranker.Search(rpb.SearchRequest(**search_body(QUERIES[0])), timeout=60)
    assert [h["id"] for h in answer["hits"]] == [h.id for h in direct.hits], "different answers"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for clients, by in report["clients"].items():
        for name in TRANSPORTS:
            f = by[name]
            print(
                f"{clients} client(s) {name:4s}: {f['qps']:7.2f} queries/s  p50 {f['p50_ms']:7.1f}"
                f" ms  p99 {f['p99_ms']:7.1f} ms  errors {f['errors']}"
            )
        print(f"{clients} client(s) gRPC/HTTP: {by['ratio']}")
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
