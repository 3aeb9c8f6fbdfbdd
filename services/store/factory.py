"""The configured vector store, opened for every model version this process serves."""

from __future__ import annotations

from collections.abc import Sequence

from services.config import StoreCfg
from services.store.interface import VectorStore


def build_store(cfg: StoreCfg, versions: Sequence[tuple[str, int]]) -> VectorStore:
    """Open `versions` ((model version, dim), the primary first: an empty store goes live on it).

    `edge`: Qdrant's engine embedded in this process (single-process mode). `qdrant`: a
    Qdrant server or cluster at `url` through qdrant-client (or its local mode under `path`)."""
    store: VectorStore
    if cfg.kind == "edge":
        from services.store.edge import EdgeStore

        store = EdgeStore(cfg.path, alias_ttl_s=cfg.alias_ttl_s, layout=cfg.layout())
    else:
        from qdrant_client import QdrantClient

        from services.store.qdrant import QdrantStore

        if cfg.url:
            client = QdrantClient(url=cfg.url, api_key=cfg.api_key, timeout=10)
        else:
            client = QdrantClient(path=str(cfg.path))
        store = QdrantStore(client, alias_ttl_s=cfg.alias_ttl_s, layout=cfg.layout())
    try:
        for version, dim in versions:
            store.open(version, dim)
    except BaseException:
        store.close()
        raise
    return store
