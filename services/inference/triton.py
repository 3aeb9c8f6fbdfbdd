"""Inference on a Triton server over gRPC: the microservice mode's backend.

The models are the ones `trainer.export` writes (names and tensors in `teran.export`). What the
services need to know about the model (version, widths) comes from the checkpoint, as in-process,
so vectors from either backend land in the same collections; the repository's manifest, when
configured, must describe the same model. Triton being down is a state, not a crash: the backend
starts anyway, answers `InferenceUnavailable` and `healthy() == False` while it is down, and
works again when it comes back (one gRPC channel, which reconnects by itself).

The channel can use TLS (a private CA, and a client certificate for Triton's mutual TLS), and
every call carries the configured headers (Triton's restricted protocols check one); header
values are secrets: they are never logged or put in an error message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import np_to_triton_dtype

from services.config import InferenceCfg, ModelCfg
from services.inference.base import InferenceUnavailable, ModelInfo
from teran.config import TeranCfg
from teran.contract import (
    BATCHING,
    BOXES,
    FEATURES,
    IMAGE_MODEL,
    LENGTHS,
    N_REGIONS,
    PIXELS,
    PIXELS_MODEL,
    REGION_BOXES,
    REGION_EMBEDDINGS,
    TEXT_MODEL,
    TOKEN_IDS,
    WORD_EMBEDDINGS,
    model_version,
    read_header,
    read_manifest,
)

log = logging.getLogger(__name__)

HEALTH_TTL_S = 1.0
"""healthy() answers from a cache this young: the watcher and probes may call it often."""
PROBE_TIMEOUT_S = 1.0
_MAX_MESSAGE = 2**31 - 1
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    # gRPC's default reconnect backoff grows to 120 s: a restarted Triton would go unnoticed
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _normalised(value: Any) -> Any:
    """JSON round trip: tuples vs lists and key order must not count as a difference."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _fits(want: list[int], got: list[int] | None) -> bool:
    """A served shape matches an expected one; -1 in `want` accepts any size."""
    if got is None or len(got) != len(want):
        return False
    return all(w in (-1, g) for w, g in zip(want, got, strict=True))


def checkpoint_info(checkpoint: str | Path) -> tuple[ModelInfo, TeranCfg]:
    """The served model's identity from its checkpoint header and weights hash (no model load)."""
    cfg = TeranCfg.from_dict(read_header(checkpoint)["model"])
    extractor = cfg.vision.extractor
    info = ModelInfo(
        version=model_version(checkpoint),
        embed_dim=cfg.embed_dim,
        feat_dim=cfg.vision.feat_dim,
        image_size=extractor.image_size if extractor is not None else None,
        max_tokens=cfg.text.max_tokens,
    )
    return info, cfg


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"common.inference.{setting}: cannot read {path}: {err}") from err


@dataclass(frozen=True)
class TritonChannel:
    """How the backend reaches Triton: TLS files (PEM) and headers sent with every call."""

    tls: bool = False
    ca_file: Path | None = None
    """None with `tls`: the system's root certificates."""
    cert_file: Path | None = None
    key_file: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Secrets (Triton's restricted-protocol key): kept out of repr, logs and errors."""

    @classmethod
    def from_cfg(cls, cfg: InferenceCfg) -> TritonChannel:
        return cls(
            tls=cfg.triton_tls,
            ca_file=cfg.triton_ca_file,
            cert_file=cfg.triton_cert_file,
            key_file=cfg.triton_key_file,
            headers={k: v.get_secret_value() for k, v in cfg.triton_headers.items()},
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, None for plaintext; ValueError naming the setting of a bad file."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "triton_ca_file"),
            private_key=_read(self.key_file, "triton_key_file"),
            certificate_chain=_read(self.cert_file, "triton_cert_file"),
        )


class TritonBackend:
    """`InferenceBackend` over tritonclient.grpc; one thread-safe client shared by all calls."""

    def __init__(
        self,
        url: str,
        model: ModelCfg,
        timeout_s: float = 30.0,
        channel: TritonChannel | None = None,
    ) -> None:
        if model.checkpoint is None:
            raise ValueError(
                "Triton inference needs common.model.checkpoint (tokenizer and model version)"
            )
        self.url = url
        self.timeout_s = timeout_s
        info, cfg = checkpoint_info(model.checkpoint)
        self.text_model, self.image_model = TEXT_MODEL, IMAGE_MODEL
        self.pixels_model: str | None = PIXELS_MODEL if info.image_size is not None else None
        self.max_batch = {name: b.max_batch_size for name, b in BATCHING.items()}
        if model.repository is not None:
            info = self._check_manifest(info, cfg, Path(model.repository))
        self.info = info
        channel = channel or TritonChannel()
        self._headers: dict[str, str] | None = dict(channel.headers) or None
        self.client = InferenceServerClient(
            url, creds=channel.credentials(), channel_args=_CHANNEL_ARGS
        )
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._healthy = False
        self._verified = False
        self._problem: str | None = None
        self._closed = False
        try:
            self._verify()  # a reachable server that serves another model: refuse to start
        except InferenceUnavailable as err:
            log.warning("starting without Triton (%s): NOT_SERVING until it answers", err)
        except ValueError:
            self.client.close()
            raise

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m for m in (self.text_model, self.image_model, self.pixels_model) if m)

    def _check_manifest(self, info: ModelInfo, cfg: TeranCfg, repo: Path) -> ModelInfo:
        """The repository must serve the checkpoint's model; returns `info` as it will be served
        (no pixel input when the repository has no pixels model)."""
        manifest = read_manifest(repo)
        where = f"Triton repository {repo} (manifest) and checkpoint"
        expected = {
            "embed_dim": info.embed_dim,
            "feat_dim": info.feat_dim,
            "max_tokens": info.max_tokens,
        }
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise ValueError(f"{where} disagree on {key}: {manifest.get(key)} != {value}")
        if _normalised(manifest.get("model_config")) != _normalised(cfg.to_dict()):
            raise ValueError(f"{where} disagree on the model configuration (another model?)")
        exported = (manifest.get("checkpoint") or {}).get("model_version")
        if exported is not None and exported != info.version:
            raise ValueError(f"{where} disagree on the weights: {exported} != {info.version}")
        self.text_model = str(manifest.get("text_model") or TEXT_MODEL)
        self.image_model = str(manifest.get("image_model") or IMAGE_MODEL)
        for name, spec in (manifest.get("models") or {}).items():
            self.max_batch[name] = int(spec.get("max_batch_size", 0)) or self.max_batch.get(name, 1)
        pixels = manifest.get("pixels_model")
        if pixels and cfg.vision.extractor is not None:
            theirs, ours = manifest.get("extractor"), asdict(cfg.vision.extractor)
            if _normalised(theirs) != _normalised(ours):
                raise ValueError(f"{where} disagree on the region extractor: {theirs} != {ours}")
            self.pixels_model = str(pixels)
            return info
        if cfg.vision.extractor is not None:
            log.warning("%s has no pixels model: image bytes will be refused", repo)
        self.pixels_model = None
        return ModelInfo(info.version, info.embed_dim, info.feat_dim, None, info.max_tokens)

    # --- checks ---------------------------------------------------------------------------

    def _unavailable(self, model: str | None, err: BaseException | str) -> InferenceUnavailable:
        what = f"Triton at {self.url}" + (f", model {model}" if model else "")
        return InferenceUnavailable(f"{what}: {err}")

    def _expected_shapes(self) -> dict[str, dict[str, list[int]]]:
        d, f = self.info.embed_dim, self.info.feat_dim
        shapes = {
            self.text_model: {TOKEN_IDS: [-1, -1], WORD_EMBEDDINGS: [-1, -1, d]},
            self.image_model: {
                FEATURES: [-1, -1, f],
                BOXES: [-1, -1, 4],
                REGION_EMBEDDINGS: [-1, -1, d],
            },
        }
        if self.pixels_model is not None and self.info.image_size is not None:
            s = self.info.image_size
            shapes[self.pixels_model] = {PIXELS: [-1, 3, s, s], REGION_BOXES: [-1, -1, 4]}
        return shapes

    def _verify(self) -> None:
        """Compare the served models' tensors with the checkpoint's widths (again after the
        server went away: another one may come back).

        InferenceUnavailable: not reachable or not loaded yet. ValueError: another model.
        """
        if self._verified:
            return
        for name, tensors in self._expected_shapes().items():
            try:
                meta = self.client.get_model_metadata(
                    name, headers=self._headers, client_timeout=PROBE_TIMEOUT_S
                )
            except Exception as err:
                raise self._unavailable(name, err) from err
            served = {t.name: list(t.shape) for t in (*meta.inputs, *meta.outputs)}
            for tensor, shape in tensors.items():
                got = served.get(tensor)
                if not _fits(shape, got):
                    raise ValueError(
                        f"Triton at {self.url} serves {name} with {tensor} {got}, but checkpoint "
                        f"model {self.info.version} needs {shape}: a repository of another model?"
                    )
        self._verified = True

    def healthy(self) -> bool:
        """Server live and ready, every model ready and of this checkpoint (cached ~1 s)."""
        with self._lock:
            now = time.monotonic()
            if self._closed:
                return False
            if now - self._checked_at < HEALTH_TTL_S:
                return self._healthy
            self._healthy = self._probe()
            self._checked_at = time.monotonic()
            return self._healthy

    def _probe(self) -> bool:
        try:
            ask = {"headers": self._headers, "client_timeout": PROBE_TIMEOUT_S}
            up = self.client.is_server_live(**ask)
            up = up and self.client.is_server_ready(**ask)
            up = up and all(self.client.is_model_ready(m, **ask) for m in self.models)
            if not up:
                self._verified = False  # a server that comes back may serve another repository
                return False
            self._verify()
        except ValueError as err:
            if self._problem is None:
                log.error("%s", err)
            self._problem = str(err)
            return False
        except Exception:
            self._verified = False
            return False
        self._problem = None
        return True

    # --- inference ------------------------------------------------------------------------

    def _infer(
        self, model: str, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]
    ) -> list[np.ndarray]:
        """One model call, split into chunks of the model's max batch size."""
        if self._closed:
            raise self._unavailable(model, "the backend is closed")
        if self._problem is not None:
            raise self._unavailable(model, self._problem)
        rows = len(next(iter(feeds.values())))
        step = max(1, self.max_batch.get(model, rows))
        parts = [
            self._infer_once(model, {k: v[a : a + step] for k, v in feeds.items()}, outputs)
            for a in range(0, max(rows, 1), step)
        ]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(outputs))]

    def _infer_once(
        self, model: str, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]
    ) -> list[np.ndarray]:
        inputs = []
        for name, array in feeds.items():
            if array.ndim == 1:  # per-row counts are declared [1] (reshaped to [] by Triton)
                array = array[:, None]
            array = np.ascontiguousarray(array)
            item = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_data_from_numpy(array)
            inputs.append(item)
        try:
            result = self.client.infer(
                model,
                inputs,
                outputs=[InferRequestedOutput(name) for name in outputs],
                headers=self._headers,
                client_timeout=self.timeout_s,
            )
        except Exception as err:  # transport, server and model errors alike
            with self._lock:
                self._checked_at = -float("inf")  # the next healthy() asks the server again
            raise self._unavailable(model, err) from err
        arrays = []
        for name in outputs:
            out = result.as_numpy(name)
            if out is None:
                raise self._unavailable(model, f"no {name} in the response")
            # a view of the response bytes is read-only; callers may write, as in-process
            arrays.append(out if out.flags.writeable else out.copy())
        return arrays

    def encode_text(self, token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        feeds = {TOKEN_IDS: token_ids.astype(np.int64), LENGTHS: lengths.astype(np.int64)}
        (words,) = self._infer(self.text_model, feeds, (WORD_EMBEDDINGS,))
        return words.astype(np.float32, copy=False)

    def encode_regions(
        self, features: np.ndarray, boxes: np.ndarray, n_regions: np.ndarray
    ) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {
            FEATURES: features.astype(np.float32),
            BOXES: boxes.astype(np.float32),
            N_REGIONS: n_regions.astype(np.int64),
        }
        (slots,) = self._infer(self.image_model, feeds, (REGION_EMBEDDINGS,))
        return slots.astype(np.float32, copy=False)

    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.pixels_model is None:
            raise ValueError("this model has no built-in region extractor")
        slots, boxes = self._infer(
            self.pixels_model,
            {PIXELS: pixels.astype(np.float32)},
            (REGION_EMBEDDINGS, REGION_BOXES),
        )
        return slots.astype(np.float32, copy=False), boxes.astype(np.float32, copy=False)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.client.close()
