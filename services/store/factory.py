"""The configured vector store, opened for the served model version."""

from __future__ import annotations

from services.config import StoreCfg
from services.store.base import VectorStore


def build_store(cfg: StoreCfg, model_version: str, dim: int) -> VectorStore:
    """`edge`: Qdrant's engine embedded in this process (single-process mode). `qdrant`: a
    Qdrant server or cluster at `url` through qdrant-client (or its local mode under `path`)."""
    store: VectorStore
    if cfg.kind == "edge":
        from services.store.edge import EdgeStore

        store = EdgeStore(cfg.path)
    else:
        from qdrant_client import QdrantClient

        from services.store.qdrant import QdrantStore

        if cfg.url:
            client = QdrantClient(url=cfg.url, api_key=cfg.api_key, timeout=10)
        else:
            client = QdrantClient(path=str(cfg.path))
        store = QdrantStore(client)
    store.open(model_version, dim)
    return store
