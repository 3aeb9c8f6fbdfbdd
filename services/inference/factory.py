"""The configured inference backend, micro-batched."""

from __future__ import annotations

from services.config import CommonCfg
from services.inference.base import InferenceBackend


def build_backend(common: CommonCfg) -> InferenceBackend:
    cfg = common.inference
    if cfg.backend == "inprocess":
        from services.inference.inprocess import InProcessBackend

        assert common.model.checkpoint is not None  # Settings validated it
        backend: InferenceBackend = InProcessBackend(common.model.checkpoint)
    else:
        from services.inference.triton import TritonBackend

        backend = TritonBackend(cfg.triton_url, common.model, timeout_s=cfg.timeout_s)
    from services.inference.batcher import BatchingBackend

    return BatchingBackend(backend, max_batch=cfg.max_batch, max_delay_ms=cfg.max_delay_ms)
