"""The configured inference backends, micro-batched: one per served model version."""

from __future__ import annotations

from services.config import CommonCfg, ModelCfg
from services.inference.base import InferenceBackend
from services.inference.models import ServedModels


def build_backend(common: CommonCfg, model: ModelCfg | None = None) -> InferenceBackend:
    """A backend for `model` (default: `common.model`)."""
    cfg = common.inference
    model = model or common.model
    if cfg.backend == "inprocess":
        from services.inference.inprocess import InProcessBackend

        assert model.checkpoint is not None  # Settings validated it
        if cfg.torch_threads is not None:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        backend: InferenceBackend = InProcessBackend(model.checkpoint)
    else:
        from services.inference.triton import TritonBackend, TritonChannel

        url = model.triton_url or cfg.triton_url
        channel = TritonChannel.from_cfg(cfg)
        backend = TritonBackend(url, model, timeout_s=cfg.timeout_s, channel=channel)
    from services.inference.batcher import BatchingBackend

    return BatchingBackend(backend, max_batch=cfg.max_batch, max_delay_ms=cfg.max_delay_ms)


def build_models(common: CommonCfg) -> ServedModels:
    """Every model of `common.models()`; ValueError when two are the same version."""
    backends: dict[str, InferenceBackend] = {}
    checkpoints = {}
    try:
        for model in common.models():
            backend = build_backend(common, model)
            version = backend.info.version
            if version in backends:
                backend.close()
                raise ValueError(
                    f"{model.checkpoint} is model version {version}, which is already loaded "
                    "(standby_models lists the served model or a duplicate)"
                )
            assert model.checkpoint is not None
            backends[version], checkpoints[version] = backend, model.checkpoint
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    return ServedModels(backends, checkpoints, primary=next(iter(backends)))
