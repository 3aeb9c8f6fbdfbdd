"""Triton python-backend model: one exported TERAN encoder (`model.onnx` next to it) on onnxruntime.

`teran.triton_repo` copies this file as `<model>/<version>/model.py` for Triton servers without
the onnxruntime backend (such as the one inside nvidia-pytriton). It needs only numpy and
onnxruntime in the stub's Python, not the `teran` package, so any python-backend image runs it.

Requests that Triton's dynamic batcher hands over together run as one onnxruntime call when their
shapes agree; each request still gets its own response (or error), in request order.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton: still importable for tests and tooling
    pb_utils = None

ONNX_FILE = "model.onnx"

COUNT_CHECKS = {"LENGTHS": ("TOKEN_IDS", 2), "N_REGIONS": ("FEATURES", 1)}
"""count input -> (padded input whose axis 1 bounds it, least valid count). Out-of-range counts
would give NaN or silently wrong vectors rather than an error, so they are refused here."""


def check_counts(feeds: dict[str, np.ndarray]) -> None:
    """Raise ValueError when a per-row count lies outside [least, padded width]."""
    for count, (padded, least) in COUNT_CHECKS.items():
        if count not in feeds or padded not in feeds:
            continue
        values, width = feeds[count], feeds[padded].shape[1]
        if values.size and (int(values.min()) < least or int(values.max()) > width):
            raise ValueError(f"{count} must lie in [{least}, {width}] (the {padded} axis 1)")


def _error(message: str) -> Any:
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    """Runs `model.onnx` with the input and output names that `config.pbtxt` declares."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.name = str(config["name"])
        self.inputs = [str(i["name"]) for i in config["input"]]
        self.outputs = [str(o["name"]) for o in config["output"]]
        self.dtypes = {
            str(o["name"]): pb_utils.triton_string_to_numpy(o["data_type"])
            for o in config["output"]
        }
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0") or 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        path = os.path.join(args["model_repository"], args["model_version"], ONNX_FILE)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def _feeds(self, request: Any) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name} is missing")
            feeds[name] = np.ascontiguousarray(tensor.as_numpy())
        check_counts(feeds)
        return feeds

    def _respond(self, outputs: list[np.ndarray]) -> Any:
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(out, dtype=self.dtypes[name]))
            for name, out in zip(self.outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_group(self, members: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """One onnxruntime call for requests of equal shapes, split back per request."""
        if len(members) == 1:
            return [list(self.session.run(self.outputs, members[0]))]
        joined = {n: np.concatenate([m[n] for m in members]) for n in self.inputs}
        outputs = self.session.run(self.outputs, joined)
        cuts = np.cumsum([len(m[self.inputs[0]]) for m in members])[:-1]
        per_output = [np.split(out, cuts) for out in outputs]
        return [list(parts) for parts in zip(*per_output, strict=True)]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[tuple[int, ...], ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
            except Exception as err:  # a bad request fails alone
                responses[index] = _error(f"{self.name}: {err}")
                continue
            key = tuple(feeds[n].shape[1:] for n in self.inputs)
            groups.setdefault(key, []).append((index, feeds))
        for members in groups.values():
            results: list[list[np.ndarray] | str]
            try:
                results = list(self._run_group([feeds for _, feeds in members]))
            except Exception:  # the joined run failed: run alone to find out whose input did
                results = [self._run_alone(feeds) for _, feeds in members]
            for (index, _), outputs in zip(members, results, strict=True):
                if isinstance(outputs, str):
                    responses[index] = _error(outputs)
                else:
                    responses[index] = self._respond(outputs)
        return responses

    def _run_alone(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | str:
        """Outputs, or the error message that request should get."""
        try:
            return list(self.session.run(self.outputs, feeds))
        except Exception as err:
            return f"{self.name}: {err}"

    def finalize(self) -> None:
        self.session = None
