"""`logicbundle pack`, `push` and `inspect`: what authors type, what they get back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from logicbundle.cli import main
from tests.oci.mock_registry import MockRegistry

DESCRIPTOR = {
    "name": "pricing",
    "version": "1.2.0",
    "entrypoint": "rules:Rules",
    "interface": {"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}},
    "labels": {"team": "shop"},
}


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "rules.py").write_text("class Rules:\n    def price(self, item):\n        return 2.0\n")
    (src / "logicbundle.yaml").write_text(yaml.safe_dump(DESCRIPTOR))
    return src


@pytest.fixture
def registry() -> Iterator[MockRegistry]:
    with MockRegistry() as running:
        yield running


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_pack_writes_a_layout_and_prints_its_digest(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pricing.oci.tar"
    assert main(["pack", str(bundle_dir), "--output-file", str(out), "--output", "json"]) == 0
    packed = _json(capsys)
    assert out.exists()
    assert packed["name"] == "pricing"
    assert str(packed["digest"]).startswith("sha256:")


def test_push_prints_the_digest_that_pack_computed(
    bundle_dir: Path, tmp_path: Path, registry: MockRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pricing.oci.tar"
    main(["pack", str(bundle_dir), "--output-file", str(out), "--output", "json"])
    digest = _json(capsys)["digest"]
    ref = f"{registry.host}/shop/pricing:1.2.0"
    assert main(["push", str(bundle_dir), ref, "--insecure"]) == 0
    assert capsys.readouterr().out.strip() == digest
    assert main(["push", str(out), f"{registry.host}/shop/copy:1", "--insecure"]) == 0
    assert capsys.readouterr().out.strip() == digest


def test_inspect_shows_the_bundle_manifest_of_a_reference_and_of_a_file(
    bundle_dir: Path, tmp_path: Path, registry: MockRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"{registry.host}/shop/pricing:1.2.0"
    main(["push", str(bundle_dir), ref, "--insecure"])
    digest = capsys.readouterr().out.strip()
    assert main(["inspect", ref, "--insecure", "--output", "json"]) == 0
    remote = _json(capsys)
    assert remote["digest"] == digest
    assert remote["signatures"] == 0
    assert remote["manifest"]["labels"] == {"team": "shop"}  # type: ignore[index]
    out = tmp_path / "p.tar"
    main(["pack", str(bundle_dir), "--output-file", str(out)])
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pricing 1.2.0" in text
    assert digest in text


def test_the_command_line_wins_over_the_descriptor(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.tar"
    main(
        [
            "pack",
            str(bundle_dir),
            "--output-file",
            str(out),
            "--bundle-version",
            "9.9.9",
            "--output",
            "json",
        ]
    )
    assert _json(capsys)["version"] == "9.9.9"


@pytest.mark.parametrize(
    ("descriptor", "message"),
    [
        ({"version": "1.0.0", "interface": {"functions": {}}}, "has no name"),
        ({**DESCRIPTOR, "colour": "blue"}, "unknown keys colour"),
        ("just a string", "must be a mapping"),
        ({**DESCRIPTOR, "name": "Not A DNS Label"}, "name"),
    ],
    ids=["missing name", "unknown key", "not a mapping", "bad name"],
)
def test_a_bad_descriptor_fails_with_exit_1_and_says_why(
    bundle_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    descriptor: object,
    message: str,
) -> None:
    (bundle_dir / "logicbundle.yaml").write_text(yaml.safe_dump(descriptor))
    assert main(["pack", str(bundle_dir), "--output-file", str(tmp_path / "o.tar")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.tar").exists()


def test_pushing_over_plain_http_needs_insecure(
    bundle_dir: Path, registry: MockRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", str(bundle_dir), f"{registry.host}/shop/pricing:1"]) == 1
    assert "insecure" in capsys.readouterr().err.lower()


def test_a_reference_that_is_not_a_reference_fails_clearly(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", str(bundle_dir), "Not A Ref!"]) == 1
    assert "Not A Ref!" in capsys.readouterr().err
