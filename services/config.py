"""One configuration for every deployment mode: a YAML file, overridden by environment variables.

`target: all` runs every service in one process with the embedded store and in-process
inference; `target: ranker` (etc.) runs one service and reaches its peers over gRPC. The mode is
configuration, not a fork: the same sections feed the same code paths.

Environment variables use the prefix `TERAN_` and `__` between sections, e.g.
`TERAN_COMMON__STORE__URL=http://qdrant:6333` or `TERAN_TARGET=ranker`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from services.store.layout import FirstStage, IndexLayout, Quantization, SearchMode

Target = Literal["all", "search", "image_encoder", "text_encoder", "ranker", "gateway"]
"""What one process runs (`--target`); `services.modules.TARGETS` says which services each
hosts."""
TARGETS: tuple[Target, ...] = get_args(Target)
_HEADER_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


class TlsCfg(BaseModel):
    """Server certificate and key (PEM); with `client_ca_file`, clients must present a
    certificate it signed (mTLS, e.g. between the services)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    peer_ca_file: Path | None = None
    """The CA that signed the peers' certificates: set, this process reaches its peers over
    TLS and presents its own certificate to them (mTLS between the services)."""

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _pair(self) -> TlsCfg:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("server.tls: set both cert_file and key_file, or neither")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("server.tls.client_ca_file needs cert_file and key_file")
        return self


class AuthCfg(BaseModel):
    keys_file: Path | None = None
    """API keys with their roles, stored as hashes (`python -m services.security new-key`);
    re-read when it changes. None: no authentication (loopback only, or `allow_insecure`)."""
    service_key_file: Path | None = None
    """The key this process sends to its peers (a key with the roles the peer RPCs need)."""
    allow_insecure: bool = False
    """Serve a non-loopback address without keys or without TLS. Logged loudly."""
    reflection: Literal["admin", "off"] = "admin"
    """Server reflection for admin keys only (open with no keys file), or not at all."""


class LimitsCfg(BaseModel):
    """Admission limits: past them an RPC gets RESOURCE_EXHAUSTED at once, so one kind of
    client cannot stall the others or the health checks."""

    max_concurrent_rpcs: int = Field(64, ge=1, le=4096)
    """Unary RPCs handled at once."""
    max_open_streams: int = Field(16, ge=1, le=1024)
    """Ingest streams open at once (each holds a thread while it is open)."""
    search_slots: int | None = Field(None, ge=1, le=1024)
    """Searches (and query encodings) computed at once; more wait their turn, within their
    deadline. None: one per CPU core. Keeps a crowd of searches from taking the CPU that
    ingestion needs (the searches' own throughput is CPU-bound either way)."""
    stream_idle_s: float = Field(60.0, gt=0, le=3600)
    """An Ingest stream that sends nothing for this long is closed (DEADLINE_EXCEEDED)."""
    default_rate_per_s: float | None = Field(None, gt=0)
    """Requests per second per API key unless its entry sets its own (None: unlimited)."""
    default_burst: int = Field(50, ge=1)


class ServerCfg(BaseModel):
    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="None: no /metrics")
    shutdown_grace_s: float = Field(5.0, ge=0)
    max_message_mb: int = Field(32, ge=1, le=512)
    health_port: int | None = Field(None, ge=0, le=65535)
    """A plaintext port that serves grpc.health.v1 only: kubelet's gRPC probes cannot speak TLS
    or send keys. None: health on the main port only."""
    tls: TlsCfg = TlsCfg()
    auth: AuthCfg = AuthCfg()
    limits: LimitsCfg = LimitsCfg()


class ModelCfg(BaseModel):
    checkpoint: Path | None = None
    """This project's checkpoint folder: tokenizer and model version always, weights for
    in-process inference. Required."""
    repository: Path | None = None
    """A Triton model repository exported by `trainer.export` (Triton inference)."""
    triton_url: str | None = None
    """This model's Triton, when not `inference.triton_url`."""


class InferenceCfg(BaseModel):
    backend: Literal["inprocess", "triton"] = "inprocess"
    triton_url: str = "127.0.0.1:8001"
    max_batch: int = Field(32, ge=1, le=1024)
    max_delay_ms: float = Field(0.0, ge=0, le=1000)
    """How long a request waits for others to share its model call. 0: none; requests that
    arrive while a call runs still share the next one, so batches grow with load alone."""
    timeout_s: float = Field(30.0, gt=0)
    torch_threads: int | None = Field(None, ge=1, le=256)
    """Intra-op threads of in-process inference (None: torch's default, one per core). On a
    machine shared with the store's search, 1 avoids threads preempting each other."""
    triton_tls: bool = False
    """Reach Triton over TLS (tritonserver --grpc-use-ssl), for every model's Triton."""
    triton_ca_file: Path | None = None
    """The CA that signed Triton's certificate (PEM); None: the system's roots."""
    triton_cert_file: Path | None = None
    """This process's certificate for Triton's mutual TLS (--grpc-use-ssl-mutual)."""
    triton_key_file: Path | None = None
    triton_headers: dict[str, SecretStr] = {}
    """Headers sent with every Triton call, never logged, e.g. from the environment
    `TERAN_COMMON__INFERENCE__TRITON_HEADERS='{"triton-grpc-protocol-key": "..."}'`:
    `--grpc-restricted-protocol=health,metadata,inference:key=...` checks that header."""

    @model_validator(mode="after")
    def _triton_channel(self) -> InferenceCfg:
        files = (self.triton_ca_file, self.triton_cert_file, self.triton_key_file)
        if not self.triton_tls and any(f is not None for f in files):
            raise ValueError("common.inference: triton_*_file settings need triton_tls: true")
        if (self.triton_cert_file is None) != (self.triton_key_file is None):
            raise ValueError("common.inference: set triton_cert_file and triton_key_file together")
        for key, value in self.triton_headers.items():
            if not _HEADER_KEY.fullmatch(key) or key.startswith("grpc-"):
                raise ValueError(
                    f"common.inference.triton_headers: {key!r} is not a gRPC header name "
                    "(lower case letters, digits, '-', '_', '.'; not grpc-*)"
                )
            if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
                raise ValueError(
                    f"common.inference.triton_headers[{key!r}]: the value must be printable ASCII"
                )
        return self


class StoreCfg(BaseModel):
    kind: Literal["edge", "qdrant"] = "edge"
    path: Path = Path("data/store")
    """edge: the embedded engine's folder."""
    url: str | None = None
    """qdrant: server or cluster URL (https:// for TLS); None with kind=qdrant uses local mode
    under `path`."""
    api_key: SecretStr | None = None
    """Qdrant's API key (sent as the api-key header), e.g. TERAN_COMMON__STORE__API_KEY."""
    ca_file: Path | None = None
    """The CA that signed Qdrant's certificate (PEM) for an https:// url; None: system roots."""
    timeout_s: int = Field(10, ge=1, le=600)
    """Per request to Qdrant: a server that accepts but does not answer fails requests and
    health checks (UNAVAILABLE) after this long, not after qdrant-client's default."""
    alias_ttl_s: float = Field(1.0, ge=0, le=60)
    """How long a process trusts the live alias it read; after an upgrade switches it, a
    replica keeps serving the previous version (consistently) for at most this long."""
    search: SearchMode = "two_stage"
    """two_stage: HNSW candidates over pooled vectors, then MaxSim; exact: MaxSim over all."""
    first_stage: FirstStage = "pooled"
    pooled_vectors: int = Field(16, ge=1, le=64)
    quantization: Quantization = "none"
    originals_on_disk: bool = False
    payload_on_disk: bool = False
    rescore: bool = True
    oversampling: float = Field(2.0, ge=1, le=16)
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construct: int = Field(256, ge=8, le=4096)
    hnsw_ef: int = Field(128, ge=8, le=10_000)
    indexing_threshold: int = Field(1000, ge=1)
    shard_number: int = Field(1, ge=1, le=1024)
    """Shards per collection on a Qdrant cluster (the embedded engine is one shard)."""
    replication_factor: int = Field(1, ge=1, le=16)
    write_consistency_factor: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _remote(self) -> StoreCfg:
        if self.ca_file is not None and not (self.url or "").startswith("https://"):
            raise ValueError("common.store.ca_file needs an https:// url")
        return self

    def layout(self) -> IndexLayout:
        """The collections' layout these settings describe (validated there as well)."""
        names = IndexLayout.__dataclass_fields__
        return IndexLayout(**{k: v for k, v in self.model_dump().items() if k in names})


class CommonCfg(BaseModel):
    model: ModelCfg = ModelCfg()
    standby_models: list[ModelCfg] = []
    """Other model versions loaded beside `model`: the next one while an upgrade re-encodes
    into it, or the previous one to roll back to. The store's live alias picks which one
    answers; `model` only decides where an empty store starts."""
    inference: InferenceCfg = InferenceCfg()
    store: StoreCfg = StoreCfg()

    def models(self) -> list[ModelCfg]:
        return [self.model, *self.standby_models]


class ImageEncoderCfg(BaseModel):
    max_image_bytes: int = Field(16 << 20, ge=1)
    max_pixels: int = Field(40_000_000, ge=1, le=170_000_000)
    """Decoded pixels per image (PIL refuses more than about 179 million itself)."""
    max_regions: int = Field(100, ge=1)
    max_in_flight: int = Field(512, ge=1)
    max_chunk_pixels: int = Field(80_000_000, ge=1)
    """Decoded pixels of one Ingest chunk (RGB: 3 bytes each): a chunk stops growing at this
    budget, read from the image headers before decoding, so memory stays bounded."""
    max_payload_bytes: int = Field(64 << 10, ge=16, le=16 << 20)
    """Serialized size of one image's payload: it comes back with every search hit."""
    max_uri_chars: int = Field(2048, ge=1, le=1 << 16)

    @model_validator(mode="after")
    def _chunk_fits_an_image(self) -> ImageEncoderCfg:
        if self.max_chunk_pixels < self.max_pixels:
            raise ValueError("image_encoder.max_chunk_pixels must be at least max_pixels")
        return self


class TextEncoderCfg(BaseModel):
    max_sentences: int = Field(64, ge=1)
    max_sentence_chars: int = Field(1024, ge=2, le=1 << 16)
    """Characters per sentence, checked before tokenising (whose cost grows with the text);
    64 tokens rarely need 400."""


class RankerCfg(BaseModel):
    candidates: int = Field(100, ge=1, le=10_000)
    """Images fetched from the store's MaxSim before the exact re-score."""
    max_top_k: int = Field(100, ge=1)
    max_offset: int = Field(1000, ge=0)
    max_query_chars: int = Field(1000, ge=1, le=1 << 16)
    """Characters of a Search query or an ingested sentence, checked before it is sent to the
    text encoder (below text_encoder.max_sentence_chars: the ranker may add a full stop)."""
    max_payload_bytes: int = Field(64 << 10, ge=16, le=16 << 20)
    """Serialized size of one sentence's payload (IngestSentences)."""
    image_encoder_url: str | None = None
    """Peer address when the ranker runs alone (images as queries)."""
    text_encoder_url: str | None = None


class GatewayCfg(BaseModel):
    """The HTTP/JSON gateway and search page (`services/gateway`): a thin mapping onto the
    gRPC API, which it reaches at `upstream` with the caller's own API key."""

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)
    """None: 8080, or a free port when server.grpc_port is 0 (tests, the demo)."""
    upstream: str | None = None
    """The Ranker's gRPC address; None: this process's own server (target all)."""
    image_upstream: str | None = None
    """The ImageEncoder's gRPC address (ingest, encode); None: `upstream`."""
    max_upload_bytes: int = Field(16 << 20, ge=1024, le=256 << 20)
    """An uploaded image's bytes; a request body may be a third larger (base64 in JSON)."""
    timeout_s: float = Field(30.0, gt=0, le=600)
    """Deadline of each upstream call."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    """HTTPS for the gateway (PEM); a non-loopback host needs them or server.auth.allow_insecure."""

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes * 4 // 3 + (64 << 10)

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewayCfg:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("gateway: set both tls_cert_file and tls_key_file, or neither")
        return self


HIT_OVERHEAD_BYTES = 8 << 10
"""A search hit's bytes besides its payload, uri or text: a 256-character id, the score and at
most 64 word alignments."""


def max_hit_bytes(settings: Settings) -> int:
    """The largest ImageHit or SentenceHit the limits allow (UTF-8: 4 bytes a character)."""
    image = settings.image_encoder.max_payload_bytes + 4 * settings.image_encoder.max_uri_chars
    sentence = settings.ranker.max_payload_bytes + 4 * settings.ranker.max_query_chars
    return max(image, sentence) + HIT_OVERHEAD_BYTES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TERAN_", env_nested_delimiter="__", extra="forbid"
    )

    target: Target = "all"
    server: ServerCfg = ServerCfg()
    common: CommonCfg = CommonCfg()
    image_encoder: ImageEncoderCfg = ImageEncoderCfg()
    text_encoder: TextEncoderCfg = TextEncoderCfg()
    ranker: RankerCfg = RankerCfg()
    gateway: GatewayCfg = GatewayCfg()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.target == "gateway" and not self.gateway.upstream:
            raise ValueError("target gateway needs gateway.upstream (the Ranker's address)")
        if self.common.model.checkpoint is None and self.target != "gateway":
            raise ValueError(
                "common.model.checkpoint is required (tokenizer and model version; the weights "
                "too for in-process inference)"
            )
        for i, model in enumerate(self.common.standby_models):
            if model.checkpoint is None:
                raise ValueError(f"common.standby_models[{i}].checkpoint is required")
        if self.target in ("ranker", "search") and not self.ranker.text_encoder_url:
            raise ValueError(f"target {self.target} needs ranker.text_encoder_url")
        if self.ranker.max_query_chars >= self.text_encoder.max_sentence_chars:
            raise ValueError(
                "ranker.max_query_chars must be below text_encoder.max_sentence_chars (the "
                "ranker adds a full stop to what it sends)"
            )
        page = self.ranker.max_top_k * max_hit_bytes(self)
        if page > self.server.max_message_mb << 20:  # a full page must fit in one response
            raise ValueError(
                f"ranker.max_top_k x the largest hit ({max_hit_bytes(self)} bytes: payload, "
                f"uri or text limits) is {page} bytes, more than server.max_message_mb"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # precedence: explicit arguments, then environment, then the YAML file (if any)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file") is not None:
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (YAML), the environment and `overrides`, validated."""
    if path is None:
        return Settings(**overrides)
    yaml_file = Path(path)
    if not yaml_file.is_file():
        raise FileNotFoundError(f"config file {yaml_file} does not exist")

    class FromFile(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": yaml_file})

    return FromFile(**overrides)
