"""One configuration for every deployment mode: a YAML file, overridden by environment variables.

`target: all` runs every service in one process with the embedded store and in-process
inference; `target: ranker` (etc.) runs one service and reaches its peers over gRPC. The mode is
configuration, not a fork: the same sections feed the same code paths.

Environment variables use the prefix `TERAN_` and `__` between sections, e.g.
`TERAN_COMMON__STORE__URL=http://qdrant:6333` or `TERAN_TARGET=ranker`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from services.store.layout import FirstStage, IndexLayout, Quantization, SearchMode

TARGETS = ("all", "search", "image_encoder", "text_encoder", "ranker")


class ServerCfg(BaseModel):
    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="None: no /metrics")
    shutdown_grace_s: float = Field(5.0, ge=0)
    max_message_mb: int = Field(32, ge=1, le=512)


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


class StoreCfg(BaseModel):
    kind: Literal["edge", "qdrant"] = "edge"
    path: Path = Path("data/store")
    """edge: the embedded engine's folder."""
    url: str | None = None
    """qdrant: server or cluster URL; None with kind=qdrant uses local mode under `path`."""
    api_key: str | None = None
    alias_ttl_s: float = Field(1.0, ge=0, le=60)
    """How long a process trusts the live alias it read; after an upgrade switches it, a
    replica keeps serving the previous version (consistently) for at most this long."""
    search: SearchMode = "two_stage"
    """two_stage: HNSW candidates over pooled vectors, then MaxSim; exact: MaxSim over all."""
    first_stage: FirstStage = "pooled"
    pooled_vectors: int = Field(8, ge=1, le=64)
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
    max_pixels: int = Field(40_000_000, ge=1)
    max_regions: int = Field(100, ge=1)
    max_in_flight: int = Field(512, ge=1)


class TextEncoderCfg(BaseModel):
    max_sentences: int = Field(64, ge=1)


class RankerCfg(BaseModel):
    candidates: int = Field(100, ge=1, le=10_000)
    """Images fetched from the store's MaxSim before the exact re-score."""
    max_top_k: int = Field(100, ge=1)
    max_offset: int = Field(1000, ge=0)
    image_encoder_url: str | None = None
    """Peer address when the ranker runs alone (images as queries)."""
    text_encoder_url: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TERAN_", env_nested_delimiter="__", extra="forbid"
    )

    target: str = "all"
    server: ServerCfg = ServerCfg()
    common: CommonCfg = CommonCfg()
    image_encoder: ImageEncoderCfg = ImageEncoderCfg()
    text_encoder: TextEncoderCfg = TextEncoderCfg()
    ranker: RankerCfg = RankerCfg()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.common.model.checkpoint is None:
            raise ValueError(
                "common.model.checkpoint is required (tokenizer and model version; the weights "
                "too for in-process inference)"
            )
        for i, model in enumerate(self.common.standby_models):
            if model.checkpoint is None:
                raise ValueError(f"common.standby_models[{i}].checkpoint is required")
        if self.target in ("ranker", "search") and not self.ranker.text_encoder_url:
            raise ValueError(f"target {self.target} needs ranker.text_encoder_url")
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
        # precedence: explicit arguments, then environment, then the YAML file
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_yaml_file))
        return tuple(sources)


_yaml_file: Path | None = None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (YAML), the environment and `overrides`, validated."""
    global _yaml_file
    _yaml_file = Path(path) if path is not None else None
    if _yaml_file is not None and not _yaml_file.is_file():
        raise FileNotFoundError(f"config file {_yaml_file} does not exist")
    try:
        return Settings(**overrides)
    finally:
        _yaml_file = None
