"""Inference behind one small interface: in-process (embedded mode) or NVIDIA Triton."""

from services.inference.base import InferenceBackend, InferenceUnavailable, ModelInfo

__all__ = ["InferenceBackend", "InferenceUnavailable", "ModelInfo"]
