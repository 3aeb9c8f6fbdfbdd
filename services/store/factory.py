"""The configured vector store, opened for every model version this process serves."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from services.config import StoreCfg
from services.store.interface import VectorStore

if TYPE_CHECKING:
    from qdrant_client import QdrantClient


def qdrant_client(cfg: StoreCfg) -> QdrantClient:
    """qdrant-client for `cfg`: local mode without a url; otherwise the url's scheme decides
    TLS, and the api key, the CA and the timeout apply to REST and gRPC alike."""
    from qdrant_client import QdrantClient

    if not cfg.url:
        return QdrantClient(path=str(cfg.path))
    extra: dict[str, Any] = {}
    if cfg.ca_file is not None:
        try:
            ca = cfg.ca_file.read_bytes()
        except OSError as err:
            raise ValueError(f"common.store.ca_file: cannot read {cfg.ca_file}: {err}") from err
        extra["verify"] = ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
        extra["grpc_options"] = {"root_certificates": ca}
        # its version check is a bare httpx.get that would not trust the CA (a warning only)
        extra["check_compatibility"] = False
    key = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
    return QdrantClient(url=cfg.url, api_key=key, timeout=cfg.timeout_s, **extra)


def build_store(cfg: StoreCfg, versions: Sequence[tuple[str, int]]) -> VectorStore:
    """Open `versions` ((model version, dim), the primary first: an empty store goes live on it).

    `edge`: Qdrant's engine embedded in this process (single-process mode). `qdrant`: a
    Qdrant server or cluster at `url` through qdrant-client (or its local mode under `path`)."""
    store: VectorStore
    if cfg.kind == "edge":
        from services.store.edge import EdgeStore

        store = EdgeStore(cfg.path, alias_ttl_s=cfg.alias_ttl_s, layout=cfg.layout())
    else:
        from services.store.qdrant import QdrantStore

        client = qdrant_client(cfg)
        store = QdrantStore(client, alias_ttl_s=cfg.alias_ttl_s, layout=cfg.layout())
    try:
        for version, dim in versions:
            store.open(version, dim)
    except BaseException:
        store.close()
        raise
    return store
