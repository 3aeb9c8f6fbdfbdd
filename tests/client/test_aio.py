"""The asyncio client against a real server with keys on: the same typed results as the
threaded client, one result per item in order, concurrent calls from one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from services.config import load_settings
from services.main import RunningApp, start
from services.security.keys import hash_key, new_key
from teran_client import AsyncTeranClient, Item, TeranClient, TeranError
from tests import messages


@pytest.fixture(scope="module")
def keyed(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningApp, str]]:
    key = new_key()
    folder = tmp_path_factory.mktemp("aio")
    entry = {"name": "app", "sha256": hash_key(key), "roles": ["search", "ingest"]}
    (folder / "keys.yaml").write_text(yaml.safe_dump({"keys": [entry]}))
    running = start(
        load_settings(
            None,
            common={"model": {"checkpoint": str(checkpoint)}, "store": {"path": str(folder / "s")}},
            server={"grpc_port": 0, "metrics_port": None,
                    "auth": {"keys_file": str(folder / "keys.yaml")}},
        )
    )  # fmt: skip
    yield running, key
    running.stop(0)


def _items() -> list[Item]:
    good = [Item(id=f"a{i}", regions=_arrays(i), payload={"n": i}) for i in range(6)]
    bad = Item(id="bad", image=b"x", regions=_arrays(9))  # two sources: refused client-side
    return [*good[:3], bad, *good[3:]]


def _arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from services.convert import from_boxes, from_matrix

    msg = messages.region_features(seed)
    features = from_matrix(msg.features, "f")
    return features, from_boxes(msg.boxes, features.shape[0], "b")


def test_the_asyncio_client_answers_like_the_threaded_one(keyed: tuple[RunningApp, str]) -> None:
    running, key = keyed

    async def scenario() -> None:
        async with AsyncTeranClient(running.address, api_key=key) as client:
            await client.wait_ready(30)
            results = [r async for r in client.ingest(_items())]
            assert [r.id for r in results] == ["a0", "a1", "a2", "bad", "a3", "a4", "a5"]
            assert [r.stored for r in results] == [True] * 3 + [False] + [True] * 3
            sentences = await client.ingest_sentences([("s0", "a red circle."), ("s1", "")])
            assert [s.stored for s in sentences] == [True, False]
            queries = [f"a shape number {i}" for i in range(12)]
            found = await asyncio.gather(
                *(client.search(q, top_k=3, explain=True) for q in queries)
            )
            assert all(len(f.hits) == 3 for f in found)
            stats = await client.stats()
            assert stats.images == 6 and stats.sentences == 1
            by_id = await client.search_sentences(image_id="a0", top_k=1)
            assert [h.id for h in by_id.hits] == ["s0"]
            similar = await client.search_similar_images(image_id="a0", top_k=3)
            by_regions = await client.search_similar_images(regions=_arrays(0), top_k=4)
            assert by_regions.hits[0].id == "a0"
            assert [h.id for h in similar.hits] == [h.id for h in by_regions.hits[1:]]
            assert "a0" not in {h.id for h in similar.hits} and similar.words == []
            with TeranClient(running.address, api_key=key) as threaded:
                same = threaded.search(queries[0], top_k=3, explain=True)
                alike = threaded.search_similar_images(image_id="a0", top_k=3)
            assert alike == similar
            # Concurrent queries share an encoder batch, so scores agree to float precision.
            assert [h.id for h in same.hits] == [h.id for h in found[0].hits]
            assert [h.score for h in same.hits] == pytest.approx(
                [h.score for h in found[0].hits], abs=1e-5
            )
            assert [[(a.word, a.region) for a in h.alignment] for h in same.hits] == [
                [(a.word, a.region) for a in h.alignment] for h in found[0].hits
            ]
            deleted = await client.delete(image_ids=["a5", "nope"])
            assert deleted.deleted == 1 and deleted.not_found == ["nope"]
        async with AsyncTeranClient(running.address) as anonymous:
            with pytest.raises(TeranError) as info:
                await anonymous.stats()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(scenario())
