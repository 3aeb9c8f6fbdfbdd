"""`make bench-load`: the platform under a steady mixed load, as a public service sees it.

Eight search clients (Search with explanations, and SearchSentences by a stored image), one
ingest stream sending pictures at a steady rate, and a Delete every few seconds, for ten
minutes against `python -m services` in its own process with API keys on. Reported: errors
(any status but OK), p50 / p99 per RPC, the ingest acknowledgement latency (item sent to its
result back), and the server's memory growth.
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import torch
import yaml

from benchmarks.bench_services import QUERIES
from benchmarks.served import TORCH_THREADS, Server
from services.security.keys import hash_key, new_key
from teran.checkpoint import model_version
from teran.data.synthetic import SyntheticScenes
from teran_dev.demo_data import png_bytes
from teran_protos.v1 import image_encoder_pb2 as ipb
from teran_protos.v1 import image_encoder_pb2_grpc as igrpc
from teran_protos.v1 import ranker_pb2 as rpb
from teran_protos.v1 import ranker_pb2_grpc as rgrpc

SEARCH_CLIENTS = 8
BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", default="models/teran-synthetic-tiny")
    p.add_argument("--duration-s", type=float, default=600.0)
    p.add_argument("--preload", type=int, default=300, help="images stored before the load")
    p.add_argument("--ingest-rate", type=float, default=4.0, help="images/s on the stream")
    p.add_argument("--delete-every-s", type=float, default=5.0)
    p.add_argument("--search-slots", type=int, default=None, help="server.limits.search_slots")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="benchmarks/results/load.json")
    return p.parse_args(argv)


class Tally:
    """Latencies and final codes per RPC, from many threads."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.codes: dict[str, Counter[str]] = {}
        self.lock = threading.Lock()

    def add(self, rpc: str, seconds: float, code: str = "OK") -> None:
        with self.lock:
            self.latencies.setdefault(rpc, []).append(seconds * 1000)
            self.codes.setdefault(rpc, Counter())[code] += 1

    def call(self, rpc: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except grpc.RpcError as err:
            self.add(rpc, time.perf_counter() - t0, err.code().name)
            return None
        self.add(rpc, time.perf_counter() - t0)
        return out

    def summary(self) -> dict[str, Any]:
        out = {}
        for rpc, values in sorted(self.latencies.items()):
            values = sorted(values)
            out[rpc] = {
                "count": len(values),
                "p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))], 2),
                "codes": dict(self.codes[rpc]),
            }
        return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teran-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    keys = workdir / "keys.yaml"
    entry = {"name": "bench", "sha256": hash_key(key), "roles": ["search", "ingest"]}
    keys.write_text(yaml.safe_dump({"keys": [entry]}))
    n_pictures = args.preload + int(args.duration_s * args.ingest_rate) + 1
    scenes = SyntheticScenes(min(n_pictures, 2000), split="test", seed=23)
    pictures = [png_bytes(scenes.image(i)) for i in range(len(scenes))]
    server = Server(
        workdir,
        args.checkpoint,
        workdir / "store",
        config={
            "server": {
                "auth": {"keys_file": str(keys)},
                "limits": {"search_slots": args.search_slots},
            }
        },
        api_key=key,
    )
    tally = Tally()
    try:
        images = igrpc.ImageEncoderStub(server.channel)
        ranker = rgrpc.RankerStub(server.channel)
        preload = (ipb.IngestItem(id=f"pre{i}", image=pictures[i]) for i in range(args.preload))
        stored = sum(r.stored for r in images.Ingest(preload))
        assert stored == args.preload, f"preload stored {stored} of {args.preload}"
        captions = [
            rpb.Sentence(id=f"cap{i}-{j}", text=text)
            for i in range(args.preload)
            for j, text in enumerate(scenes.captions(i)[:2])
        ]
        for a in range(0, len(captions), 256):
            ranker.IngestSentences(rpb.IngestSentencesRequest(sentences=captions[a : a + 256]))
        rss_start = server.rss_bytes()
        stop_at = time.monotonic() + args.duration_s
        threads = [
            threading.Thread(target=_search_client, args=(k, ranker, tally, stop_at, args))
            for k in range(SEARCH_CLIENTS)
        ]
        ingested: queue.Queue[str] = queue.Queue()
        threads.append(
            threading.Thread(
                target=_ingest_stream, args=(images, pictures, tally, stop_at, args, ingested)
            )
        )
        threads.append(
            threading.Thread(target=_deleter, args=(ranker, tally, stop_at, args, ingested))
        )
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss_end = server.rss_bytes()
    finally:
        server.stop()
    per_rpc = tally.summary()
    errors = sum(n for s in per_rpc.values() for code, n in s["codes"].items() if code != "OK")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": torch.get_num_threads(), "processor": platform.machine()},
        "model_version": model_version(Path(args.checkpoint)),
        "server": {
            "target": "all",
            "store": "edge",
            "inference.torch_threads": TORCH_THREADS,
            "auth": "api keys",
            "limits.search_slots": args.search_slots or "one per core",
        },
        "load": {
            "duration_s": args.duration_s,
            "search_clients": SEARCH_CLIENTS,
            "ingest_rate_per_s": args.ingest_rate,
            "delete_every_s": args.delete_every_s,
            "preloaded_images": args.preload,
        },
        "errors": errors,
        "rpcs": per_rpc,
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_growth_mb": round((rss_end - rss_start) / 2**20, 1),
    }


def _search_client(
    k: int, ranker: rgrpc.RankerStub, tally: Tally, stop_at: float, args: argparse.Namespace
) -> None:
    i = k
    while time.monotonic() < stop_at:
        if k % 4 == 3:  # two of the eight clients go the other way: sentences for an image
            request = rpb.SearchSentencesRequest(image_id=f"pre{i % args.preload}", top_k=5)
            tally.call("SearchSentences", ranker.SearchSentences, request, timeout=30)
        else:
            query = QUERIES[i % len(QUERIES)]
            request = rpb.SearchRequest(query=query, top_k=10, explain=True)
            tally.call("Search", ranker.Search, request, timeout=30)
        i += SEARCH_CLIENTS


def _ingest_stream(
    images: igrpc.ImageEncoderStub,
    pictures: list[bytes],
    tally: Tally,
    stop_at: float,
    args: argparse.Namespace,
    ingested: queue.Queue[str],
) -> None:
    """One stream, an image every 1/rate s; each result's latency is from its item's send."""
    sent: dict[str, float] = {}

    def items() -> Iterator[ipb.IngestItem]:
        n = 0
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            item_id = f"load{n}"
            sent[item_id] = time.perf_counter()
            yield ipb.IngestItem(id=item_id, image=pictures[(args.preload + n) % len(pictures)])
            n += 1
            next_at += 1 / args.ingest_rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    try:
        for result in images.Ingest(items()):
            code = "OK" if result.stored else BY_NUMBER[result.code].name
            if result.stored:
                ingested.put(result.id)
            tally.add("Ingest.ack", time.perf_counter() - sent.pop(result.id), code)
    except grpc.RpcError as err:
        tally.add("Ingest.stream", 0.0, err.code().name)
    for _ in sent:  # sent, never answered
        tally.add("Ingest.ack", 0.0, "UNANSWERED")


def _deleter(
    ranker: rgrpc.RankerStub,
    tally: Tally,
    stop_at: float,
    args: argparse.Namespace,
    ingested: queue.Queue[str],
) -> None:
    while time.monotonic() + args.delete_every_s < stop_at:
        time.sleep(args.delete_every_s)
        ids: list[str] = []
        while len(ids) < 2 and not ingested.empty():
            ids.append(ingested.get())
        if ids:
            tally.call("Delete", ranker.Delete, rpb.DeleteRequest(image_ids=ids), timeout=30)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for rpc, s in report["rpcs"].items():
        p50, p99 = s["p50_ms"], s["p99_ms"]
        print(f"{rpc:16s} n={s['count']:6d} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  {s['codes']}")
    print(f"errors {report['errors']}, RSS {report['rss_start_mb']} -> {report['rss_end_mb']} MB")
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
