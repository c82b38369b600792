"""The image cache keys of e2e/harness/images.py: pure functions, nothing is built."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2e.harness import images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the files the Dockerfile reads, plus a tests/ and an examples/ folder."""
    root = tmp_path / "repo"
    for rel in ("Dockerfile", "requirements/runtime.txt", "pyproject.toml", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, root / rel)
    (root / "operator" / "logicbundle").mkdir(parents=True)
    (root / "operator" / "logicbundle" / "__init__.py").write_text("VERSION = 1\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("def test() -> None: ...\n")
    (root / "examples" / "sample_app").mkdir(parents=True)
    (root / "examples" / "sample_app" / "app.py").write_text("print('app')\n")
    (root / "examples" / "sample_app" / "Dockerfile").write_text("FROM x\n")
    return root


def test_the_context_hash_changes_with_a_file_under_operator(tree: Path) -> None:
    before = images.context_hash(tree)
    assert images.context_hash(tree) == before
    (tree / "operator" / "logicbundle" / "__init__.py").write_text("VERSION = 2\n")
    assert images.context_hash(tree) != before


def test_a_new_file_or_an_executable_bit_under_operator_is_a_new_context(tree: Path) -> None:
    before = images.context_hash(tree)
    new = tree / "operator" / "logicbundle" / "extra.py"
    new.write_text("")
    with_new = images.context_hash(tree)
    assert with_new != before
    new.chmod(0o755)
    assert images.context_hash(tree) != with_new


def test_the_dockerfile_and_the_pinned_requirements_are_part_of_the_context(tree: Path) -> None:
    for rel in ("Dockerfile", "requirements/runtime.txt", "pyproject.toml", "README.md"):
        before = images.context_hash(tree)
        with (tree / rel).open("a") as fh:
            fh.write("\n# changed\n")
        assert images.context_hash(tree) != before, rel


def test_tests_examples_and_caches_do_not_change_the_project_context(tree: Path) -> None:
    before = images.context_hash(tree)
    (tree / "tests" / "test_x.py").write_text("def test() -> None: assert True\n")
    (tree / "examples" / "sample_app" / "app.py").write_text("print('v2')\n")
    cache = tree / "operator" / "logicbundle" / "__pycache__"
    cache.mkdir()
    (cache / "__init__.cpython-311.pyc").write_bytes(b"\0")
    (tree / "operator" / "logicbundle.egg-info").mkdir()
    (tree / "operator" / "logicbundle.egg-info" / "PKG-INFO").write_text("x")
    assert images.context_hash(tree) == before


def test_the_sample_tag_follows_the_project_tag_and_its_own_files(tree: Path) -> None:
    project = images.project_tag(tree, base="0" * 16)
    sample = images.sample_tag(tree, project=project)
    assert images.sample_tag(tree, project=project) == sample
    assert images.sample_tag(tree, project="f" * 16) != sample
    (tree / "examples" / "sample_app" / "app.py").write_text("print('v2')\n")
    assert images.sample_tag(tree, project=project) != sample
    assert images.project_tag(tree, base="0" * 16) == project
    assert images.project_tag(tree, base="1" * 16) != project


def test_the_base_key_covers_packages_suite_and_options_not_their_order() -> None:
    minbase = ("--variant=minbase",)
    key = images.base_key(("python3", "ca-certificates"), "bookworm", minbase)
    assert len(key) == 16
    assert images.base_key(("ca-certificates", "python3"), "bookworm", minbase) == key
    assert images.base_key(("python3",), "bookworm", ("--variant=minbase",)) != key
    assert images.base_key(("python3", "ca-certificates"), "trixie", ("--variant=minbase",)) != key
    assert images.base_key(("python3", "ca-certificates"), "bookworm", ("--variant=apt",)) != key
    assert images.base_key() == images.base_key()


def test_the_wheelhouse_key_covers_the_pins_and_the_build_backend() -> None:
    pins = (REPO / "requirements" / "runtime.txt").read_bytes()
    key = images.wheelhouse_key(pins, ["hatchling==1.29.0"])
    assert images.wheelhouse_key(pins + b"\n", ["hatchling==1.29.0"]) != key
    assert images.wheelhouse_key(pins, ["hatchling==1.30.0"]) != key
    assert images.build_requires(REPO / "pyproject.toml")  # the build backend is pinned


def test_the_expected_references_live_under_the_harness_namespace() -> None:
    wanted = images.expected_images()
    assert set(wanted.pushable()) == set(images.PUSHED)
    for image in (wanted.base, *wanted.pushable().values()):
        assert image.reference.startswith("localhost/logicbundle-e2e/")
    assert wanted.pause.tag.startswith(images.PAUSE_TAG + "-")
    assert wanted.logicbundle.tag == images.project_tag(REPO)


def test_a_pushed_image_pins_its_digest() -> None:
    pushed = images.PushedImage(reference="127.0.0.1:5000/lb/pause:3.10", digest="sha256:ab")
    assert pushed.pinned == "127.0.0.1:5000/lb/pause@sha256:ab"


def test_the_pause_source_is_c_that_reaps_and_stops_on_sigterm() -> None:
    source = images.PAUSE_SOURCE.read_text()
    assert "SIGTERM" in source and "waitpid" in source
