"""Monitoring: the dashboard's and the alerts' metric names against what services/metrics.py
exports, the rules with promtool (checked and fired), and a real Prometheus scraping a running
single-process service."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
import yaml
from prometheus_client.metrics import MetricWrapperBase

import services.metrics
from services.config import load_settings
from services.main import RunningApp, start
from teran import create_model
from teran.checkpoint import save_checkpoint
from teran_protos.v1 import ranker_pb2, ranker_pb2_grpc
from tests.helm.chart import (
    COMPONENT_LABEL,
    DASHBOARD_FILE,
    RELEASE,
    RULES_FILE,
    TRITON_METRICS,
    VALUE_SETS,
    render,
    rendered,
)

# --- monitoring -----------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every sample name services/metrics.py's prometheus_client objects expose."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = set()
    for obj in vars(services.metrics).values():
        if isinstance(obj, MetricWrapperBase):
            names |= {obj._name + s for s in suffixes[str(obj._type)]}
    return names


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL (or Grafana label_values) expression: identifiers that are not
    functions, keywords, label names, label values, ranges or dashboard variables."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,[^)]*\)", r"\1", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", s):
        if s[m.end() :].lstrip().startswith("(") or m.group().lower() in _PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            queries.append(var["query"]["query"])
    return queries


def rule_exprs(groups: list[dict[str, Any]]) -> list[str]:
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_promql_metric_names_extractor() -> None:
    assert promql_metric_names(
        'sum by (job, method) (rate(teran_rpc_requests_total{code!="OK",job=~"a|b"}[5m]))'
        " / on(job) group_left(x) bar:recorded offset 5m > 1e3"
    ) == {"teran_rpc_requests_total", "bar:recorded"}
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(x_bucket{a=~"$ns"}[$__rate_interval])))'
    ) == {"x_bucket"}
    assert promql_metric_names('label_values(up{namespace=~"$namespace"}, job)') == {"up"}
    assert promql_metric_names("up == 0 and absent(nv_gpu_utilization)") == {
        "up",
        "nv_gpu_utilization",
    }
    exported = exported_metric_names()
    assert "teran_rpc_requests_total" in exported
    assert "teran_rpc_latency_seconds_bucket" in exported and "teran_queue_depth" in exported
    assert "teran_rpc_requests" not in exported and "teran_rpc_latency_seconds" not in exported


def test_dashboard_and_alerts_use_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    chart_rules = rendered("monitoring-on").one("PrometheusRule", RELEASE)["spec"]["groups"]
    file_rules = yaml.safe_load(RULES_FILE.read_text())["groups"]
    known = exported_metric_names() | TRITON_METRICS | {"up"}
    for source, exprs in (
        ("dashboard", dashboard_queries(dashboard)),
        ("PrometheusRule", rule_exprs(chart_rules)),
        ("rules.yaml", rule_exprs(file_rules)),
    ):
        used = set().union(*(promql_metric_names(e) for e in exprs))
        assert used, source
        assert used <= known, f"{source} uses metrics nobody exports: {sorted(used - known)}"
    used = set().union(*(promql_metric_names(e) for e in dashboard_queries(dashboard)))
    assert {
        "teran_rpc_requests_total",
        "teran_rpc_latency_seconds_bucket",
        "teran_dependency_latency_seconds_bucket",
        "teran_ingested_items_total",
        "teran_ingested_bytes_total",
        "teran_model_batch_size_bucket",
        "teran_queue_depth",
        "nv_inference_count",
    } <= used
    alerts = set().union(*(promql_metric_names(e) for e in rule_exprs(file_rules)))
    assert {
        "teran_rpc_requests_total",
        "teran_rpc_latency_seconds_bucket",
        "teran_dependency_up",
        "nv_inference_request_failure",
        "up",
    } <= alerts


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {
        "datasource",
        "namespace",
        "job",
    }
    titles = " | ".join(p["title"] for p in panels).lower()
    for words in (
        "requests by method and code",
        "errors by method and code",
        "latency p50",
        "latency p99",
        "dependency latency",
        "ingested items",
        "ingested bytes",
        "batch size",
        "queue depth",
        "triton",
    ):
        assert words in titles, words
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]


def test_monitoring_objects() -> None:
    assert not {"ServiceMonitor", "PrometheusRule"} & {d["kind"] for d in rendered("defaults").docs}
    assert not any("-dashboards" in n for n in rendered("defaults").names("ConfigMap"))
    r = rendered("monitoring-on")
    sm = r.one("ServiceMonitor", RELEASE)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    (expression,) = sm["spec"]["selector"]["matchExpressions"]
    scraped = [
        s
        for s in r.of("Service")
        if s["metadata"]["labels"].get(COMPONENT_LABEL) in expression["values"]
    ]
    assert {s["metadata"]["name"] for s in scraped} == {
        f"{RELEASE}-ranker",
        f"{RELEASE}-image-encoder",
        f"{RELEASE}-text-encoder",
        f"{RELEASE}-triton",
    }
    for s in scraped:
        assert "metrics" in {p["name"] for p in s["spec"]["ports"]}
    rule = r.one("PrometheusRule", RELEASE)
    assert {a["alert"] for g in rule["spec"]["groups"] for a in g["rules"]} == {
        "TeranRPCErrorRate",
        "TeranRPCLatencyHigh",
        "TeranDependencyDown",
        "TeranQdrantDown",
        "TeranTritonDown",
        "TeranTritonInferenceFailures",
    }
    dashboards = r.one("ConfigMap", f"{RELEASE}-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboards["data"]["teran.json"]) == json.loads(DASHBOARD_FILE.read_text())
    monolith = render({**VALUE_SETS["monolith"], "monitoring": {"enabled": True}})
    groups = monolith.one("PrometheusRule", RELEASE)["spec"]["groups"]
    assert "TeranTritonDown" not in {a["alert"] for g in groups for a in g["rules"]}


def test_rules_file_is_the_charts_rules() -> None:
    chart = rendered("monitoring-on").one("PrometheusRule", RELEASE)["spec"]
    assert yaml.safe_load(RULES_FILE.read_text()) == {"groups": chart["groups"]}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: apt-get install -y prometheus"
    return path


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    chart = rendered("monitoring-on").one("PrometheusRule", RELEASE)["spec"]
    rendered_rules = tmp_path / "chart-rules.yaml"
    rendered_rules.write_text(yaml.safe_dump(chart))
    for path in (RULES_FILE, rendered_rules):
        out = subprocess.run(
            [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS: 6 rules found" in out.stdout


def test_promtool_alerts_fire(tmp_path: Path) -> None:
    """The alerts fire on the series the services export (health checks, reflection and client
    errors left out), with their labels and summaries."""
    ranker = 'namespace="search",job="teran-ranker"'
    bucket = f'teran_rpc_latency_seconds_bucket{{{ranker},method="Search"'
    tests = {
        "rule_files": [str(RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'teran_rpc_requests_total{{{ranker},method="Search",code="OK"}}',
                        "values": "0+60x30",
                    },
                    {
                        "series": f'teran_rpc_requests_total{{{ranker},method="Search",'
                        'code="UNAVAILABLE"}',
                        "values": "0+30x30",
                    },
                    {
                        "series": f'teran_rpc_requests_total{{{ranker},method="Search",'
                        'code="INVALID_ARGUMENT"}',
                        "values": "0+10x30",
                    },
                    {
                        "series": f'teran_rpc_requests_total{{{ranker},method="Check",code="OK"}}',
                        "values": "0+6000x30",
                    },
                    {"series": f'{bucket},le="1"}}', "values": "0x30"},
                    {"series": f'{bucket},le="2.5"}}', "values": "0+10x30"},
                    {"series": f'{bucket},le="+Inf"}}', "values": "0+10x30"},
                    {
                        "series": f'teran_dependency_up{{{ranker},pod="teran-ranker-0",'
                        'dependency="store"}',
                        "values": "0x30",
                    },
                    {
                        "series": f'teran_dependency_up{{{ranker},pod="teran-ranker-0",'
                        'dependency="inference"}',
                        "values": "1x30",
                    },
                    {
                        "series": 'up{namespace="search",job="teran-triton",instance="t:8002"}',
                        "values": "1 1 0x28",
                    },
                    {
                        "series": 'nv_inference_request_success{namespace="search",model="text"}',
                        "values": "0+90x30",
                    },
                    {
                        "series": 'nv_inference_request_failure{namespace="search",model="text"}',
                        "values": "0+10x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "12m",
                        "alertname": "TeranRPCErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "search",
                                    "job": "teran-ranker",
                                    "method": "Search",
                                },
                                "exp_annotations": {
                                    "summary": "teran-ranker Search: 30% of RPCs fail",
                                    "description": "RPCs end with a server-side status code "
                                    "(not OK, not a client error).",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "TeranRPCLatencyHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "search",
                                    "job": "teran-ranker",
                                    "method": "Search",
                                },
                                "exp_annotations": {
                                    "summary": "teran-ranker Search: p99 latency 2.485s",
                                    "description": "The 99th percentile of a unary RPC's "
                                    "handling time is above the threshold.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "TeranQdrantDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "namespace": "search"},
                                "exp_annotations": {
                                    "summary": "search: no service reaches Qdrant",
                                    "description": "Every service that uses the store reports "
                                    "it down; ingestion and search fail.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "TeranDependencyDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "search",
                                    "job": "teran-ranker",
                                    "pod": "teran-ranker-0",
                                    "dependency": "store",
                                },
                                "exp_annotations": {
                                    "summary": "teran-ranker-0: store does not answer",
                                    "description": "The pod reports NOT_SERVING and answers "
                                    "UNAVAILABLE until the dependency is back.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "TeranTritonDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "search",
                                    "job": "teran-triton",
                                    "instance": "t:8002",
                                },
                                "exp_annotations": {
                                    "summary": "t:8002: Triton does not answer scrapes",
                                    "description": "A Triton replica is down; the encoders "
                                    "answer UNAVAILABLE while none is up.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "12m",
                        "alertname": "TeranTritonInferenceFailures",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "search",
                                    "model": "text",
                                },
                                "exp_annotations": {
                                    "summary": "text: 10% of inference requests fail",
                                    "description": "Triton fails inference requests for a model.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        parsed: dict[str, Any] = json.loads(reply.read())
    return parsed


def _poll(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as e:  # Prometheus still starting
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout_s:.0f} s (last: {last!r})")


@pytest.fixture
def running_service(tmp_path: Path) -> Iterator[RunningApp]:
    torch.manual_seed(0)
    model, tokenizer = create_model("teran-minilm-tiny")
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint(model, tokenizer, checkpoint, bundled_backbone=True)
    settings = load_settings(
        None,
        common={"model": {"checkpoint": str(checkpoint)}, "store": {"path": str(tmp_path / "s")}},
        server={"grpc_port": 0, "metrics_port": 0, "shutdown_grace_s": 1},
    )
    running = start(settings)
    yield running
    running.stop(0)


@pytest.mark.slow
def test_prometheus_scrapes_a_running_service(running_service: RunningApp, tmp_path: Path) -> None:
    """A real Prometheus (Debian's) scrapes the single-process service's /metrics and evaluates
    deploy/prometheus/rules.yaml against it."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: apt-get install -y prometheus"
    with grpc.insecure_channel(running_service.address) as channel:
        stats = ranker_pb2_grpc.RankerStub(channel).Stats(ranker_pb2.StatsRequest(), timeout=30)
    assert stats is not None
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": "teran-monolith",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{running_service.metrics_port}"],
                        "labels": {"namespace": "test"},
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        # OK only: other tests in this process count Stats with other codes too
        query = urllib.parse.quote('teran_rpc_requests_total{method="Stats",code="OK"}')
        series = _poll(
            "teran_rpc_requests_total scraped",
            lambda: _get_json(f"{api}/query?query={query}")["data"]["result"],
        )
        labels = series[0]["metric"]
        assert labels["job"] == "teran-monolith" and labels["code"] == "OK"
        assert float(series[0]["value"][1]) >= 1
        latency = urllib.parse.quote("teran_rpc_latency_seconds_bucket")
        assert _get_json(f"{api}/query?query={latency}")["data"]["result"]

        def rules_evaluated() -> list[dict[str, Any]]:
            groups = _get_json(f"{api}/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else []

        rules = _poll("rules evaluated", rules_evaluated)
        assert len(rules) == 6
        assert [r["name"] for r in rules if r["state"] == "firing"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
