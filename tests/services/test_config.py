"""Settings: one typed target list, and sources in order (arguments, environment, YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.config import TARGETS, load_settings
from services.modules import TARGETS as SERVICES_OF_TARGET


def test_every_target_has_its_services() -> None:
    assert sorted(SERVICES_OF_TARGET) == sorted(TARGETS)


def test_precedence_and_no_state_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "teran.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "common": {"model": {"checkpoint": "ckpt"}},
                "ranker": {"candidates": 7, "max_top_k": 9},
                "server": {"grpc_port": 1234},
            }
        )
    )
    monkeypatch.setenv("TERAN_RANKER__MAX_TOP_K", "11")
    loaded = load_settings(path, server={"grpc_port": 0})
    assert loaded.ranker.candidates == 7  # the file
    assert loaded.ranker.max_top_k == 11  # the environment over the file
    assert loaded.server.grpc_port == 0  # arguments over both
    # the next load without a file reads none: nothing of the first one stays
    with pytest.raises(ValidationError, match="checkpoint is required"):
        load_settings()


def test_an_unknown_target_is_refused_by_its_type() -> None:
    with pytest.raises(ValidationError, match="target"):
        load_settings(None, target="everything", common={"model": {"checkpoint": "c"}})
    with pytest.raises(FileNotFoundError):
        load_settings("/nonexistent/teran.yaml")
