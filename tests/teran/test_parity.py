"""This project's encoders and scorer against the reference implementation's fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from teran.fixtures import TOLERANCE, Fixture, compare, run_fixture
from trainer import refcheck


@pytest.mark.parametrize("name", ["teran-tiny", "teran-tiny-shared"])
def test_fixture_parity(reference_dir: Path, name: str) -> None:
    fixture = Fixture.load(reference_dir / name)
    diffs = compare(fixture, run_fixture(fixture))
    assert set(diffs) == {
        "token_ids",
        "img_emb",
        "cap_emb",
        "img_emb_aggr",
        "cap_emb_aggr",
        "scores_MrSw_nopad",
        "scores_MwSr_nopad",
        "scores_symm_nopad",
        "scores_MrAVGw_nopad",
    }
    assert diffs["token_ids"] == 0
    assert max(diffs.values()) <= 1e-5, diffs


def test_padded_reference_scores_differ_only_where_zero_fill_clamps(reference_dir: Path) -> None:
    """The reference's batch scores clamp maxima at 0 for padded pairs; ours never do."""
    fixture = Fixture.load(reference_dir / "teran-tiny-shared")
    run = run_fixture(fixture)
    ours = run.model.score(run.images, run.texts, "MrSw").detach().numpy()
    batch = fixture.expected["scores_MrSw"]
    differing = np.abs(ours - batch) > 1e-5
    assert differing.sum() == 21  # the count generation.json records for nopad vs batch
    assert (batch[differing] > ours[differing]).all()  # a clamp at 0 only ever raises a max


def test_refcheck_cli_passes_and_fails(reference_dir: Path, tmp_path: Path) -> None:
    good = reference_dir / "teran-tiny"
    assert refcheck.check(good)
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "expected.npz").chmod(0o644)
    exp = dict(np.load(broken / "expected.npz"))
    exp["scores_MwSr_nopad"] = exp["scores_MwSr_nopad"] + 2 * TOLERANCE
    np.savez(broken / "expected.npz", **exp)
    assert not refcheck.check(broken)


def test_refcheck_command_exit_codes(reference_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    ok = runner.invoke(refcheck.app, [str(reference_dir / "teran-tiny")])
    assert ok.exit_code == 0, ok.output
    assert "passed on 1 fixture" in ok.output
    missing = runner.invoke(refcheck.app, [str(tmp_path)])
    assert missing.exit_code != 0
    assert "lacks checkpoint.pth.tar" in str(missing.exception)
