"""Waiting for a release's rollouts (services.upgrade.rollout) with the real kubernetes client.

No kube-apiserver can run here, so the `fake_apiserver` tests serve the two list endpoints the
waiter calls (`/apis/apps/v1/namespaces/NS/deployments` and `/statefulsets`) from an
http.server on 127.0.0.1, as Kubernetes JSON lists (DeploymentList, StatefulSetList) whose
status advances with each request; a real `kubernetes.client.ApiClient` talks to it. The rollout
rules themselves are tested on `kubernetes.client` model objects.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.upgrade.rollout import RolloutTimeout, rollout_complete, wait_for_rollouts

NAMESPACE = "teran"
SELECTOR = "app.kubernetes.io/instance=teran"
LABELS = {"app.kubernetes.io/instance": "teran", "app.kubernetes.io/name": "teran"}

# --- Kubernetes JSON, as the API server sends it --------------------------------------------


def _template(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "server", "image": "teran:2"}]},
    }


def deployment_json(
    name: str,
    *,
    generation: int = 2,
    observed: int | None = 2,
    desired: int = 2,
    replicas: int | None = 2,
    updated: int | None = 2,
    available: int | None = 2,
    labels: dict[str, str] = LABELS,
) -> dict[str, Any]:
    """A Deployment; counts of 0/None are left out, as the API server does."""
    status = {
        "observedGeneration": observed,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
    }
    component = {**labels, "app.kubernetes.io/component": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "generation": generation,
            "labels": component,
            "uid": f"uid-{name}",
            "resourceVersion": "100",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "replicas": desired,
            "selector": {"matchLabels": component},
            "template": _template(component),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        },
        "status": {key: value for key, value in status.items() if value},
    }


def statefulset_json(
    name: str,
    *,
    generation: int = 3,
    observed: int = 3,
    desired: int = 1,
    updated: int = 1,
    ready: int = 1,
    current_revision: str = "qdrant-7d9",
    update_revision: str = "qdrant-7d9",
    labels: dict[str, str] = LABELS,
) -> dict[str, Any]:
    component = {**labels, "app.kubernetes.io/component": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "generation": generation,
            "labels": component,
        },
        "spec": {
            "replicas": desired,
            "serviceName": name,
            "selector": {"matchLabels": component},
            "template": _template(component),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": desired,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "currentReplicas": desired,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
        },
    }


# --- the fake API server --------------------------------------------------------------------


@dataclass
class FakeApiServer:
    """Serves `states[i]` (deployments, statefulsets) on the i-th poll (the i-th deployments
    request; the last state repeats); `errors` answer the first deployments requests instead."""

    states: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
    errors: list[int] = field(default_factory=list)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    polls: int = 0
    port: int = 0

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, query))
        prefix = f"/apis/apps/v1/namespaces/{NAMESPACE}/"
        kind = path.removeprefix(prefix)
        if not path.startswith(prefix) or kind not in ("deployments", "statefulsets"):
            return 404, _status(404, "NotFound", f"the server could not find {path}")
        if kind == "deployments":
            self.polls += 1
            if self.polls <= len(self.errors):
                code = self.errors[self.polls - 1]
                return code, _status(code, "Failure", f"injected {code}")
        state = self.states[min(max(self.polls - 1 - len(self.errors), 0), len(self.states) - 1)]
        items = state[0] if kind == "deployments" else state[1]
        wanted = dict(
            pair.split("=", 1) for pair in query.get("labelSelector", [""])[0].split(",") if pair
        )
        chosen = [
            item
            for item in items
            if all(item["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        list_kind = "DeploymentList" if kind == "deployments" else "StatefulSetList"
        return 200, {
            "apiVersion": "apps/v1",
            "kind": list_kind,
            "metadata": {"resourceVersion": str(1000 + self.polls)},
            "items": chosen,
        }

    def kinds(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for path, _ in self.requests]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            code, body = fake.answer(url.path, parse_qs(url.query))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[FakeApiServer], client.AppsV1Api]]:
    """Start a fake API server; an AppsV1Api of the real client pointed at it."""
    servers: list[ThreadingHTTPServer] = []
    api_clients: list[client.ApiClient] = []

    def start(fake: FakeApiServer) -> client.AppsV1Api:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
        fake.port = int(httpd.server_address[1])
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{fake.port}"))
        api_clients.append(api)
        return client.AppsV1Api(api)

    yield start
    for api in api_clients:
        api.close()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


# --- wait_for_rollouts against the fake API server -------------------------------------------


def test_fake_apiserver_wait_returns_once_every_workload_rolled_out_and_not_before(
    serve: Callable[[FakeApiServer], client.AppsV1Api],
) -> None:
    qdrant_rolling = statefulset_json(
        "qdrant", updated=1, current_revision="qdrant-6c1", update_revision="qdrant-7d9"
    )
    states = [
        # helm upgrade just applied: the controller has not seen generation 3 yet
        ([deployment_json("ranker", generation=3, observed=2)], [qdrant_rolling]),
        # one new pod up (surge), the two old ones still there
        (
            [
                deployment_json(
                    "ranker", generation=3, observed=3, replicas=3, updated=1, available=1
                )
            ],
            [qdrant_rolling],
        ),
        # both new pods, one old pod terminating
        (
            [
                deployment_json(
                    "ranker", generation=3, observed=3, replicas=3, updated=2, available=1
                )
            ],
            [statefulset_json("qdrant")],
        ),
        # old pods gone, one new pod not yet available
        (
            [deployment_json("ranker", generation=3, observed=3, updated=2, available=1)],
            [statefulset_json("qdrant")],
        ),
        ([deployment_json("ranker", generation=3, observed=3)], [statefulset_json("qdrant")]),
    ]
    fake = FakeApiServer(states)
    lines: list[str] = []
    names = wait_for_rollouts(
        NAMESPACE, SELECTOR, timeout_s=30, poll_s=0.01, apps=serve(fake), log=lines.append
    )
    assert names == ["deployment/ranker", "statefulset/qdrant"]
    assert fake.polls == len(states)  # returned on the first complete state, not before
    assert fake.kinds() == ["deployments", "statefulsets"] * len(states)
    waiting = [line for line in lines if "waiting" in line]
    assert len(waiting) == len(states) - 1  # one line per change of state
    assert "observe the new spec" in waiting[0] and "revision qdrant-7d9" in waiting[0]
    assert "1 of 2 replicas updated" in waiting[1]
    assert "1 old replicas pending termination" in waiting[2]
    assert "statefulset/qdrant" not in waiting[2]
    assert "1 of 2 updated replicas available" in waiting[3]
    assert lines[-1].startswith("rollout: 2 workloads rolled out")


def test_fake_apiserver_timeout_names_the_stuck_deployment_and_why(
    serve: Callable[[FakeApiServer], client.AppsV1Api],
) -> None:
    stuck = deployment_json("text-encoder", replicas=3, updated=2, available=2)
    stuck["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "text-encoder-5f4" has timed out progressing.',
            "lastUpdateTime": "2026-01-01T00:10:00Z",
            "lastTransitionTime": "2026-01-01T00:10:00Z",
        }
    ]
    fake = FakeApiServer([([deployment_json("ranker"), stuck], [statefulset_json("qdrant")])])
    start = time.monotonic()
    with pytest.raises(RolloutTimeout) as info:
        wait_for_rollouts(
            NAMESPACE, SELECTOR, timeout_s=0.5, poll_s=0.05, apps=serve(fake), log=lambda _: None
        )
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "deployment/text-encoder: 1 old replicas pending termination" in message
    assert "progress deadline exceeded" in message and "has timed out progressing" in message
    assert "ranker" not in message and "qdrant" not in message  # the ones that are done
    assert info.value.pending == {
        "deployment/text-encoder": info.value.pending["deployment/text-encoder"]
    }
    assert isinstance(info.value, TimeoutError)
    assert 0.5 <= elapsed < 5
    assert fake.polls >= 3  # it kept polling until the deadline


def test_fake_apiserver_receives_the_label_selector_and_namespace(
    serve: Callable[[FakeApiServer], client.AppsV1Api],
) -> None:
    other = {"app.kubernetes.io/instance": "other", "app.kubernetes.io/name": "teran"}
    selector = "app.kubernetes.io/instance=teran,app.kubernetes.io/name=teran"
    # another release's deployment is stuck: the selector must keep it out
    fake = FakeApiServer(
        [
            (
                [
                    deployment_json("ranker"),
                    deployment_json("other-ranker", updated=0, labels=other),
                ],
                [],
            )
        ]
    )
    names = wait_for_rollouts(
        NAMESPACE, selector, timeout_s=5, poll_s=0.01, apps=serve(fake), log=lambda _: None
    )
    assert names == ["deployment/ranker"]
    assert [path for path, _ in fake.requests] == [
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets",
    ]
    assert all(query["labelSelector"] == [selector] for _, query in fake.requests)


def test_fake_apiserver_zero_matches_raise_at_once(
    serve: Callable[[FakeApiServer], client.AppsV1Api],
) -> None:
    fake = FakeApiServer([([deployment_json("ranker")], [statefulset_json("qdrant")])])
    with pytest.raises(ValueError, match="wrong selector") as info:
        wait_for_rollouts(
            NAMESPACE,
            "app.kubernetes.io/instance=teran-typo",
            timeout_s=10,
            poll_s=0.01,
            apps=serve(fake),
            log=lambda _: None,
        )
    assert "teran-typo" in str(info.value) and NAMESPACE in str(info.value)
    assert fake.polls == 1
    with pytest.raises(ValueError, match="empty selector"):
        wait_for_rollouts(NAMESPACE, " ", apps=serve(fake), log=lambda _: None)


def test_fake_apiserver_unavailable_is_retried_forbidden_is_not(
    serve: Callable[[FakeApiServer], client.AppsV1Api],
) -> None:
    done = ([deployment_json("ranker")], [statefulset_json("qdrant")])
    fake = FakeApiServer([done], errors=[503, 500])
    lines: list[str] = []
    names = wait_for_rollouts(
        NAMESPACE, SELECTOR, timeout_s=10, poll_s=0.01, apps=serve(fake), log=lines.append
    )
    assert names == ["deployment/ranker", "statefulset/qdrant"] and fake.polls == 3
    assert sum("API unavailable" in line for line in lines) == 1

    forbidden = FakeApiServer([done], errors=[403])
    with pytest.raises(ApiException) as info:
        wait_for_rollouts(
            NAMESPACE,
            SELECTOR,
            timeout_s=10,
            poll_s=0.01,
            apps=serve(forbidden),
            log=lambda _: None,
        )
    assert info.value.status == 403 and forbidden.polls == 1

    down = FakeApiServer([done], errors=[503] * 1000)
    with pytest.raises(RolloutTimeout, match=r"last API error: .*503"):
        wait_for_rollouts(
            NAMESPACE, SELECTOR, timeout_s=0.3, poll_s=0.05, apps=serve(down), log=lambda _: None
        )


# --- rollout_complete on kubernetes.client model objects ------------------------------------


def _deployment(
    *,
    generation: int = 4,
    observed: int | None = 4,
    desired: int | None = 3,
    replicas: int | None = 3,
    updated: int | None = 3,
    available: int | None = 3,
    paused: bool | None = None,
    conditions: list[client.V1DeploymentCondition] | None = None,
) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="ranker", namespace=NAMESPACE, generation=generation),
        spec=client.V1DeploymentSpec(
            replicas=desired,
            paused=paused,
            selector=client.V1LabelSelector(match_labels=LABELS),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=LABELS),
                spec=client.V1PodSpec(containers=[client.V1Container(name="server")]),
            ),
        ),
        status=client.V1DeploymentStatus(
            observed_generation=observed,
            replicas=replicas,
            updated_replicas=updated,
            available_replicas=available,
            conditions=conditions,
        ),
    )


def _statefulset(
    *,
    generation: int = 2,
    observed: int | None = 2,
    desired: int = 3,
    replicas: int = 3,
    updated: int | None = 3,
    ready: int | None = 3,
    current: str = "qdrant-b",
    update: str = "qdrant-b",
    strategy: client.V1StatefulSetUpdateStrategy | None = None,
) -> client.V1StatefulSet:
    return client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="qdrant", generation=generation),
        spec=client.V1StatefulSetSpec(
            replicas=desired,
            service_name="qdrant",
            selector=client.V1LabelSelector(match_labels=LABELS),
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(containers=[client.V1Container(name="qdrant")])
            ),
            update_strategy=strategy,
        ),
        status=client.V1StatefulSetStatus(
            observed_generation=observed,
            replicas=replicas,
            updated_replicas=updated,
            ready_replicas=ready,
            current_revision=current,
            update_revision=update,
        ),
    )


def test_rollout_complete_deployment_done() -> None:
    assert rollout_complete(_deployment()) == (True, "")
    assert rollout_complete(_deployment(generation=4, observed=5)) == (True, "")
    # scaled to zero: no status counts at all (the API server omits zeros)
    zero = _deployment(desired=0, replicas=None, updated=None, available=None)
    assert rollout_complete(zero) == (True, "")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"generation": 5, "observed": 4}, "observe the new spec"),
        ({"observed": None}, "observe the new spec"),
        ({"updated": 1, "replicas": 4, "available": 3}, "1 of 3 replicas updated"),
        ({"updated": None, "replicas": 3}, "0 of 3 replicas updated"),
        ({"replicas": 4}, "1 old replicas pending termination"),
        ({"available": 2}, "2 of 3 updated replicas available"),
        ({"available": None}, "0 of 3 updated replicas available"),
        ({"desired": None, "replicas": 2, "updated": 1, "available": 1}, "1 old replicas"),
    ],
)
def test_rollout_complete_deployment_not_done(changes: dict[str, Any], why: str) -> None:
    done, reason = rollout_complete(_deployment(**changes))
    assert not done and why in reason, reason


def test_rollout_complete_deployment_notes_deadline_and_pause() -> None:
    deadline = client.V1DeploymentCondition(
        type="Progressing", status="False", reason="ProgressDeadlineExceeded", message="stuck"
    )
    done, why = rollout_complete(_deployment(available=1, conditions=[deadline], paused=True))
    assert not done
    assert why == (
        "1 of 3 updated replicas available (progress deadline exceeded: stuck) "
        "(the deployment is paused)"
    )
    # a Progressing condition that is fine changes nothing
    ok = client.V1DeploymentCondition(type="Progressing", status="True", reason="NewRSAvailable")
    assert rollout_complete(_deployment(conditions=[ok])) == (True, "")


def test_rollout_complete_statefulset() -> None:
    assert rollout_complete(_statefulset()) == (True, "")
    cases = [
        (_statefulset(observed=1), "observe the new spec"),
        (_statefulset(updated=1, current="qdrant-a"), "1 of 3 pods at the update revision"),
        (_statefulset(current="qdrant-a"), "rolling update to revision qdrant-b not complete"),
        (_statefulset(ready=2), "2 of 3 pods ready"),
        (_statefulset(replicas=4), "4 pods exist, 3 wanted"),
    ]
    partitioned = client.V1StatefulSetUpdateStrategy(
        type="RollingUpdate",
        rolling_update=client.V1RollingUpdateStatefulSetStrategy(partition=2),
    )
    cases.append(
        (_statefulset(updated=1, current="qdrant-a", strategy=partitioned), "partition 2 keeps")
    )
    on_delete = client.V1StatefulSetUpdateStrategy(type="OnDelete")
    cases.append((_statefulset(updated=2, strategy=on_delete), "OnDelete"))
    for obj, why in cases:
        done, reason = rollout_complete(obj)
        assert not done and why in reason, (why, reason)
    # OnDelete: the current revision is not moved by the controller; updated pods are enough
    assert rollout_complete(_statefulset(current="qdrant-a", strategy=on_delete)) == (True, "")


def test_rollout_complete_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="V1Pod"):
        rollout_complete(client.V1Pod(metadata=client.V1ObjectMeta(name="p")))  # type: ignore[arg-type]
