"""`python -m logicbundle.api.crd` writes the CRD and reference reproducibly and catches drift."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from logicbundle.api import crd

REPO = Path(__file__).resolve().parents[2]


def _generate_in_subprocess(root: Path, *, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO / "operator")}
    subprocess.run(
        [sys.executable, "-m", "logicbundle.api.crd", "--root", str(root)],
        check=True,
        env=env,
        capture_output=True,
    )


def test_generating_twice_gives_the_same_bytes_whatever_the_hash_seed(tmp_path: Path) -> None:
    _generate_in_subprocess(tmp_path / "one", hash_seed="1")
    _generate_in_subprocess(tmp_path / "two", hash_seed="2")
    for relative in (crd.CRD_PATH, crd.REFERENCE_PATH):
        first = (tmp_path / "one" / relative).read_bytes()
        assert first == (tmp_path / "two" / relative).read_bytes()
        assert first == crd.outputs()[relative].encode()


def test_the_committed_files_match_the_models() -> None:
    diffs = crd.drift(REPO)
    assert diffs == [], "run `python -m logicbundle.api.crd` and commit the result:\n" + "".join(
        diffs
    )


def test_the_check_passes_right_after_writing(tmp_path: Path) -> None:
    assert crd.main(["--root", str(tmp_path)]) == 0
    assert crd.main(["--root", str(tmp_path), "--check"]) == 0


def test_the_check_fails_with_a_diff_when_the_crd_was_edited_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crd.write(tmp_path)
    path = tmp_path / crd.CRD_PATH
    path.write_text(path.read_text().replace("maxLength: 512", "maxLength: 9999"))
    capsys.readouterr()

    assert crd.main(["--root", str(tmp_path), "--check"]) == 1

    captured = capsys.readouterr()
    assert "-                      maxLength: 9999" in captured.out
    assert "+                      maxLength: 512" in captured.out
    assert "run `python -m logicbundle.api.crd`" in captured.err


def test_the_check_fails_when_a_generated_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crd.write(tmp_path)
    (tmp_path / crd.REFERENCE_PATH).unlink()
    assert crd.main(["--root", str(tmp_path), "--check"]) == 1
    assert str(crd.REFERENCE_PATH) in capsys.readouterr().out


def test_the_check_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["--root", str(tmp_path), "--check"]) == 1
    capsys.readouterr()
    assert list(tmp_path.iterdir()) == []


def test_the_crd_file_is_one_yaml_document_equal_to_the_model_of_the_crd() -> None:
    documents = [d for d in yaml.safe_load_all(crd.render_crd()) if d is not None]
    assert documents == [crd.crd_document()]


def test_the_reference_documents_every_spec_and_status_object() -> None:
    reference = crd.render_reference()
    for heading in (
        "### `spec.source`",
        "### `spec.verify.keyless.identities[]`",
        "### `spec.rollout.stages[]`",
        "### `spec.rollout.analysis.metrics[]`",
        "### `status.conditions[]`",
        "### `status.pods`",
    ):
        assert heading in reference
    assert "`conditions.STALLED` | `Stalled`" in reference
    assert "`names.ANNOTATION_REQUESTED_ACTION` | `logicbundle.io/requested-action`" in reference
    assert "set exactly one of subject and subjectRegex" in reference
