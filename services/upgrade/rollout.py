"""Wait until every Deployment and StatefulSet of a Helm release has rolled out.

Before the upgrade switches the Qdrant aliases to a new model version, every replica must run
the new model: the release's workloads (found by a label selector, such as
`app.kubernetes.io/instance=RELEASE`) must have finished their rollouts. "Finished" is what
`kubectl rollout status` waits for, a little stricter where kubectl stops early:

- Deployment: the controller saw the latest spec (metadata.generation <= status.observedGeneration),
  every desired replica runs the new template (updatedReplicas == spec.replicas), no old pod is
  left (status.replicas == updatedReplicas) and every new pod is available
  (availableReplicas == updatedReplicas).
- StatefulSet: the controller saw the latest spec, every pod runs the update revision
  (updatedReplicas == spec.replicas and, for RollingUpdate, currentRevision == updateRevision;
  kubectl accepts a partitioned rollout as done, this does not: pods below the partition still
  run the old model) and every pod is ready (readyReplicas == spec.replicas).

    names = wait_for_rollouts("teran", "app.kubernetes.io/instance=teran", timeout_s=900)

The API is reached with the pod's service account (in-cluster) or the local kubeconfig
(`apps_api`); it needs `list` on deployments and statefulsets in the namespace.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import urllib3
from kubernetes import client, config
from kubernetes.client import AppsV1Api, V1Deployment, V1StatefulSet
from kubernetes.client.exceptions import ApiException

Workload = V1Deployment | V1StatefulSet

PROGRESS_DEADLINE_REASON = "ProgressDeadlineExceeded"
REQUEST_TIMEOUT_S = 30.0
"""Longest wait for one list call (a hung API server must not outlast `timeout_s` by much)."""


class RolloutTimeout(TimeoutError):
    """Some workloads had not rolled out when the time ran out; the message names each one and
    why (`pending`: {kind/name: why})."""

    def __init__(self, message: str, pending: dict[str, str]) -> None:
        super().__init__(message)
        self.pending = pending


def _count(value: int | None) -> int:
    """Status counts are omitted (None) when zero."""
    return int(value or 0)


def _desired(obj: Workload) -> int:
    """spec.replicas; the API server defaults an unset one to 1."""
    replicas = obj.spec.replicas if obj.spec is not None else None
    return 1 if replicas is None else int(replicas)


def _kind(obj: object) -> str:
    if isinstance(obj, V1Deployment):
        return "deployment"
    if isinstance(obj, V1StatefulSet):
        return "statefulset"
    raise TypeError(f"expected a V1Deployment or V1StatefulSet, got {type(obj).__name__}")


def _observed(obj: Workload) -> bool:
    generation = obj.metadata.generation if obj.metadata is not None else None
    observed = obj.status.observed_generation if obj.status is not None else None
    if observed is None:
        return False
    return generation is None or int(generation) <= int(observed)


def _deployment_complete(obj: V1Deployment) -> tuple[bool, str]:
    if not _observed(obj) or obj.status is None:
        return False, "waiting for the deployment controller to observe the new spec"
    status = obj.status
    desired = _desired(obj)
    updated = _count(status.updated_replicas)
    replicas = _count(status.replicas)
    available = _count(status.available_replicas)
    why = ""
    if updated != desired:
        why = f"{updated} of {desired} replicas updated to the new template"
    elif replicas != updated:
        why = f"{replicas - updated} old replicas pending termination"
    elif available != updated:
        why = f"{available} of {updated} updated replicas available"
    if not why:
        return True, ""
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == PROGRESS_DEADLINE_REASON:
            why += f" (progress deadline exceeded: {condition.message or 'no message'})"
    if obj.spec is not None and obj.spec.paused:
        why += " (the deployment is paused)"
    return False, why


def _statefulset_complete(obj: V1StatefulSet) -> tuple[bool, str]:
    if not _observed(obj) or obj.status is None:
        return False, "waiting for the statefulset controller to observe the new spec"
    status = obj.status
    desired = _desired(obj)
    updated = _count(status.updated_replicas)
    ready = _count(status.ready_replicas)
    strategy = obj.spec.update_strategy if obj.spec is not None else None
    rolling = strategy is None or strategy.type in (None, "RollingUpdate")
    if updated != desired:
        why = f"{updated} of {desired} pods at the update revision {status.update_revision}"
        rolling_update = strategy.rolling_update if strategy is not None else None
        partition = rolling_update.partition if rolling and rolling_update else None
        if partition:
            why += f" (partition {partition} keeps lower ordinals at the old revision)"
        elif not rolling:
            why += " (OnDelete: old pods change only when deleted)"
        return False, why
    replicas = _count(status.replicas)
    if replicas != desired:
        return False, f"{replicas} pods exist, {desired} wanted"
    if rolling and status.current_revision != status.update_revision:
        return False, (
            f"rolling update to revision {status.update_revision} not complete "
            f"(current revision {status.current_revision})"
        )
    if ready != desired:
        return False, f"{ready} of {desired} pods ready"
    return True, ""


def rollout_complete(obj: Workload) -> tuple[bool, str]:
    """(True, "") when a V1Deployment or V1StatefulSet has rolled out, else (False, why not);
    TypeError for any other object."""
    if isinstance(obj, V1Deployment):
        return _deployment_complete(obj)
    if isinstance(obj, V1StatefulSet):
        return _statefulset_complete(obj)
    raise TypeError(f"expected a V1Deployment or V1StatefulSet, got {type(obj).__name__}")


def apps_api() -> AppsV1Api:
    """An `AppsV1Api`: the pod's service account in a cluster, else the local kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.AppsV1Api()


def _retryable(err: Exception) -> bool:
    """Worth another poll: the API server is unreachable, overloaded or restarting. Anything
    else (403 without RBAC, 404, a bad selector) will not change by waiting."""
    if isinstance(err, ApiException):
        return err.status is None or err.status == 429 or int(err.status) >= 500
    return isinstance(err, urllib3.exceptions.HTTPError | OSError)


def _workloads(
    apps: AppsV1Api, namespace: str, selector: str, request_timeout: float
) -> list[Workload]:
    deployments = apps.list_namespaced_deployment(
        namespace, label_selector=selector, _request_timeout=request_timeout
    )
    statefulsets = apps.list_namespaced_stateful_set(
        namespace, label_selector=selector, _request_timeout=request_timeout
    )
    return [*(deployments.items or []), *(statefulsets.items or [])]


def wait_for_rollouts(
    namespace: str,
    selector: str,
    timeout_s: float = 900,
    poll_s: float = 2.0,
    apps: AppsV1Api | None = None,
    log: Callable[[str], object] = print,
) -> list[str]:
    """Block until every Deployment/StatefulSet matching `selector` in `namespace` has rolled
    out; returns them as sorted "deployment/NAME" and "statefulset/NAME".

    Args:
        selector: a label selector (`app.kubernetes.io/instance=teran`), passed to the API.
        timeout_s: give up after this long: RolloutTimeout naming each workload not done and why.
        poll_s: seconds between two looks.
        apps: a `kubernetes.client.AppsV1Api`; default `apps_api()`.
        log: receives one line whenever the set of pending workloads or their reasons change.

    Raises:
        ValueError: nothing matches the selector (probably a wrong selector or namespace).
        RolloutTimeout: not all rolled out within `timeout_s` (also when the API server kept
            failing with retryable errors; the last one is in the message).
        kubernetes.client.ApiException: the API refused the list (e.g. 403: no RBAC for it).
    """
    if not selector.strip():
        raise ValueError("an empty selector would match every workload in the namespace")
    if timeout_s <= 0 or poll_s <= 0:
        raise ValueError(f"timeout_s and poll_s must be > 0, got {timeout_s} and {poll_s}")
    api = apps if apps is not None else apps_api()
    deadline = time.monotonic() + timeout_s
    pending: dict[str, str] = {}
    reported: dict[str, str] | None = None
    last_error: Exception | None = None
    where = f"namespace {namespace!r} with selector {selector!r}"
    while True:
        left = deadline - time.monotonic()
        try:
            objects = _workloads(api, namespace, selector, max(1.0, min(REQUEST_TIMEOUT_S, left)))
        except Exception as err:
            if not _retryable(err):
                raise
            if last_error is None:
                log(f"rollout: Kubernetes API unavailable ({type(err).__name__}), retrying")
            last_error = err
        else:
            last_error = None
            if not objects:
                raise ValueError(
                    f"no Deployment or StatefulSet in {where}: probably a wrong selector or "
                    "namespace"
                )
            names: list[str] = []
            pending = {}
            for obj in objects:
                name = f"{_kind(obj)}/{obj.metadata.name if obj.metadata else '?'}"
                names.append(name)
                done, why = rollout_complete(obj)
                if not done:
                    pending[name] = why
            if not pending:
                log(f"rollout: {len(names)} workloads rolled out: {', '.join(sorted(names))}")
                return sorted(names)
            if pending != reported:
                waiting = "; ".join(f"{name}: {why}" for name, why in sorted(pending.items()))
                log(f"rollout: waiting for {len(pending)} of {len(names)}: {waiting}")
                reported = dict(pending)
        left = deadline - time.monotonic()
        if left <= 0:
            details = "; ".join(f"{name}: {why}" for name, why in sorted(pending.items()))
            if last_error is not None:
                error = " ".join(str(last_error).split())
                details += ("; " if details else "") + f"last API error: {error}"
            raise RolloutTimeout(
                f"rollout not complete after {timeout_s:g}s in {where}: {details}", pending
            )
        time.sleep(min(poll_s, left))
