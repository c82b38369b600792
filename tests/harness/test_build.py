"""The build recipe for the Kubernetes binaries is generated, not hard-coded."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.harness import build

KUBERNETES_GO_MOD = """
module k8s.io/kubernetes

go 1.26.0

require (
	k8s.io/api v0.0.0
	github.com/x/y v1.2.3
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/apiserver => ./staging/src/k8s.io/apiserver
	k8s.io/client-go => ./staging/src/k8s.io/client-go
	github.com/x/y => github.com/x/y v1.2.4
)
"""


def test_every_staging_module_is_replaced_by_its_published_version_of_the_same_minor() -> None:
    assert build.staging_replacements(KUBERNETES_GO_MOD, "v1.37.2") == {
        "k8s.io/api": "v0.37.2",
        "k8s.io/apiserver": "v0.37.2",
        "k8s.io/client-go": "v0.37.2",
    }


def test_a_go_mod_without_staging_replacements_is_an_error() -> None:
    with pytest.raises(build.BuildError, match="no staging replacements"):
        build.staging_replacements("module k8s.io/kubernetes\n", "v1.37.2")


def test_the_version_ldflags_set_client_go_and_component_base_alike() -> None:
    flags = build.kubernetes_ldflags("v1.37.2")
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        assert f"-X {pkg}.gitVersion=v1.37.2" in flags
        assert f"-X {pkg}.gitMajor=1" in flags
        assert f"-X {pkg}.gitMinor=37" in flags


def test_components_are_cached_by_version_outside_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOGICBUNDLE_E2E_CACHE", str(tmp_path))
    assert build.KUBERNETES.dir == tmp_path / f"kubernetes-{build.versions.KUBERNETES}"
    assert build.ETCD.dir == tmp_path / f"etcd-{build.versions.ETCD}"


def test_a_component_is_built_once_and_then_taken_from_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOGICBUNDLE_E2E_CACHE", str(tmp_path))
    builds: list[Path] = []

    def fake_build(bin_dir: Path, work: Path, log: Path) -> None:
        builds.append(bin_dir)
        (bin_dir / "tool").write_text("#!/bin/sh\n")

    component = build.Component(name="tool", version="v1", binaries=("tool",), build=fake_build)
    assert component.ensure() == tmp_path / "tool-v1" / "bin"
    assert component.ensure() == tmp_path / "tool-v1" / "bin"
    assert len(builds) == 1


def test_a_failed_build_leaves_nothing_that_looks_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOGICBUNDLE_E2E_CACHE", str(tmp_path))

    def failing_build(bin_dir: Path, work: Path, log: Path) -> None:
        (bin_dir / "tool").write_text("half")
        raise build.BuildError("compiler exploded")

    component = build.Component(name="tool", version="v1", binaries=("tool",), build=failing_build)
    with pytest.raises(build.BuildError, match="compiler exploded"):
        component.ensure()
    assert not component.is_built()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_build_that_forgets_a_binary_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOGICBUNDLE_E2E_CACHE", str(tmp_path))
    component = build.Component(
        name="tool", version="v1", binaries=("tool",), build=lambda *_: None
    )
    with pytest.raises(build.BuildError, match="produced no tool"):
        component.ensure()


def test_flux_is_built_by_default_and_keyed_by_both_controllers_and_the_replaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert build.ALL["flux"].binaries == ("source-controller", "kustomize-controller")
    key = build._flux_version()
    assert build.versions.FLUX_SOURCE_CONTROLLER in key
    assert build.versions.FLUX_KUSTOMIZE_CONTROLLER in key
    monkeypatch.setattr(build.versions, "FLUX_REPLACES", {})
    assert build._flux_version() != key, "a changed replace must rebuild the controllers"
