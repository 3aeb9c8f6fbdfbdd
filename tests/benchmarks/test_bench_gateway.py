"""`make bench-gateway` at a tiny size: the served platform in its own process, both transports
measured at each client count, and the report's fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_gateway

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "teran-synthetic-tiny"


@pytest.mark.slow
def test_a_tiny_run_writes_both_transports_and_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    argv = ["--checkpoint", str(CHECKPOINT), "--images", "4", "--clients", "1,2"]
    argv += ["--seconds", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    assert bench_gateway.main(argv) == 0
    report = json.loads(out.read_text())
    assert {"date", "machine", "model_version", "server", "load", "clients", "errors"} <= set(
        report
    )
    assert report["errors"] == 0
    assert report["load"]["rpc"] == "Search" and report["load"]["images"] == 4
    assert report["load"]["queries"] == len(bench_gateway.QUERIES)
    assert set(report["clients"]) == {"1", "2"}
    for by in report["clients"].values():
        for transport in bench_gateway.TRANSPORTS:
            figures = by[transport]
            assert figures["calls"] > 0 and figures["qps"] > 0
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
            assert figures["codes"] == {"OK": figures["calls"]}
        ratio = by["ratio"]
        assert ratio["qps_grpc_over_http"] == pytest.approx(
            by["grpc"]["qps"] / by["http"]["qps"], rel=1e-2
        )
        assert ratio["p50_http_over_grpc"] == pytest.approx(
            by["http"]["p50_ms"] / by["grpc"]["p50_ms"], rel=1e-2
        )
