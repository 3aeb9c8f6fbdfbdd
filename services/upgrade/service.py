"""The Admin gRPC service: model versions, upgrades and clean-up over `Reindexer`."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from services.errors import FailedPrecondition, InvalidArgument, grpc_errors, status_of
from services.inference.models import ServedModels
from services.store import VectorStore, collection_names
from services.upgrade.reindex import Cancelled, Progress, Reindexer
from teran_protos.v1 import admin_pb2 as pb
from teran_protos.v1 import admin_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Admin"].full_name
DEFAULT_GRACE_S = 5.0
MAX_GRACE_S = 3600.0
_END = object()


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, reindexer: Reindexer, models: ServedModels) -> None:
        self.reindexer = reindexer
        self.models = models

    @property
    def store(self) -> VectorStore:
        return self.reindexer.store

    @grpc_errors
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        live = self.store.live_version(fresh=True)
        loaded = set(self.models.versions)
        stored = set(self.store.versions())
        opened = set(self.store.opened_versions()) & stored
        versions = []
        for version in sorted(loaded | stored, key=lambda v: (v != live, v)):
            counted = version in opened
            versions.append(
                pb.VersionStatus(
                    model_version=version,
                    live=version == live,
                    loaded=version in loaded,
                    stored=version in stored,
                    images=self.store.index(version).images.count() if counted else 0,
                    sentences=self.store.index(version).sentences.count() if counted else 0,
                )
            )
        return pb.StatusResponse(
            live_version=live,
            versions=versions,
            image_sources=self.store.count_sources("image"),
            sentence_sources=self.store.count_sources("sentence"),
        )

    def _target(self, requested: str) -> str:
        if requested:
            if not _valid(requested):
                raise InvalidArgument("model_version", f"{requested!r} is not a model version")
            return requested
        live = self.store.live_version(fresh=True)
        others = [v for v in self.models.versions if v != live]
        if len(others) != 1:
            raise InvalidArgument(
                "model_version",
                f"empty, and this server loads {len(others)} versions besides the live {live} "
                f"({others}): name one",
            )
        return others[0]

    def Upgrade(
        self, request: pb.UpgradeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.UpgradeProgress]:
        try:
            version = self._target(request.model_version)
            grace = request.grace_seconds if request.HasField("grace_seconds") else DEFAULT_GRACE_S
            if not 0 <= grace <= MAX_GRACE_S:
                raise InvalidArgument("grace_seconds", f"must be in 0..{MAX_GRACE_S}, got {grace}")
            if version not in self.models.versions:
                raise FailedPrecondition(
                    f"model_version {version} is not loaded by this server (it loads "
                    f"{list(self.models.versions)}): add it to common.standby_models"
                )
            if version not in self.store.opened_versions():  # its collections were dropped
                self.store.open(version, self.models.backend(version).info.embed_dim)
        except Exception as err:
            context.abort(*status_of(err))
        updates: queue.Queue[Any] = queue.Queue()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.reindexer.upgrade(
                    version,
                    grace_s=grace,
                    switch=not request.no_switch,
                    report=updates.put,
                    cancelled=lambda: not context.is_active(),
                )
            except BaseException as err:
                failure.append(err)
            finally:
                updates.put(_END)

        threading.Thread(target=run, name=f"upgrade-{version}", daemon=True).start()
        while (update := updates.get()) is not _END:
            yield _progress(update)
        if failure:
            error = failure[0]
            if isinstance(error, Cancelled):
                log.warning("%s", error)
                context.abort(grpc.StatusCode.CANCELLED, str(error))
            context.abort(*status_of(error))

    @grpc_errors
    def DropVersion(
        self, request: pb.DropVersionRequest, context: grpc.ServicerContext
    ) -> pb.DropVersionResponse:
        if not _valid(request.model_version):
            raise InvalidArgument(
                "model_version", f"{request.model_version!r} is not a model version"
            )
        try:
            self.store.drop_version(request.model_version)
        except ValueError as err:
            raise FailedPrecondition(f"model_version: {err}") from err
        return pb.DropVersionResponse()


def _valid(version: str) -> bool:
    try:
        collection_names(version)
    except ValueError:
        return False
    return True


def _progress(p: Progress) -> pb.UpgradeProgress:
    return pb.UpgradeProgress(
        phase=pb.UpgradeProgress.Phase.Value(p.phase.name),
        model_version=p.version,
        total=p.total,
        done=p.done,
        live_version=p.live,
        skipped=p.skipped,
        skipped_examples=p.examples,
    )
