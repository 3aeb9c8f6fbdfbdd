"""The model versions one process serves, by version.

A process loads `common.model` and any `common.standby_models`; which of them answers a request
is decided by the store's live alias, so a replica can serve the old and the new model across
an upgrade without a restart. Versions are the checkpoints' content hashes: two replicas that
load the same checkpoint agree on its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from services.errors import FailedPrecondition
from services.inference.base import InferenceBackend


class ServedModels:
    def __init__(
        self,
        backends: Mapping[str, InferenceBackend],
        checkpoints: Mapping[str, Path],
        primary: str,
    ) -> None:
        if primary not in backends:
            raise ValueError(f"primary version {primary!r} is not among {list(backends)}")
        self._backends = dict(backends)
        self.checkpoints = dict(checkpoints)
        self.primary = primary

    @property
    def versions(self) -> tuple[str, ...]:
        """Every served version, the primary first."""
        return (self.primary, *(v for v in self._backends if v != self.primary))

    def backend(self, version: str | None = None) -> InferenceBackend:
        """The backend for `version` (None: the primary)."""
        found = self._backends.get(version or self.primary)
        if found is None:
            raise FailedPrecondition(
                f"model version {version!r} is not loaded by this server (it serves "
                f"{list(self.versions)}): add its checkpoint to common.standby_models"
            )
        return found

    def healthy(self) -> bool:
        return all(b.healthy() for b in self._backends.values())

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
