"""Build the e2e harness's binaries from the Go module proxy, once, and cache them.

No Docker engine and no internet on the build machines, so every binary the
local control plane needs is compiled from its Go module.  Each component is
cached in its own folder keyed by its version
(``~/.cache/logicbundle-e2e/<name>-<version>/bin``); a folder is complete only
once its ``.complete`` marker exists, so an interrupted build is redone, never
half-used.  A file lock keeps two processes from building the same thing.

Run ``python -m e2e.harness.build`` to build everything ahead of time (CI does), or
``python -m e2e.harness.build kubernetes etcd`` for some of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e import versions
from e2e.harness import netns


def cache_root() -> Path:
    """Where built binaries live, outside the repository."""
    env = os.environ.get("LOGICBUNDLE_E2E_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "logicbundle-e2e"


class BuildError(RuntimeError):
    """A component could not be built; the message names it and where its log is."""


def _log(msg: str) -> None:
    print(f"[e2e.harness.build] {msg}", file=sys.stderr, flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    # The toolchain on the machine is the one we use; never fetch another.
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -buildvcs=false -trimpath").strip()
    return env


def _run_go(
    args: list[str], *, cwd: Path, log_path: Path, what: str, env: dict[str, str] | None = None
) -> None:
    """Run one go command with its output in ``log_path`` and progress on stderr."""
    started = time.monotonic()
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(30):
            _log(f"  still building {what}: {time.monotonic() - started:.0f}s elapsed")

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            proc = subprocess.run(
                args,
                cwd=cwd,
                env={**_go_env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
    finally:
        done.set()
        thread.join()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise BuildError(
            f"building {what} failed (exit {proc.returncode}); full log: {log_path}\n"
            + "\n".join(tail)
        )


@dataclass(frozen=True, kw_only=True)
class Component:
    """One cached set of binaries built the same way."""

    name: str
    version: str
    binaries: tuple[str, ...]
    build: Callable[[Path, Path, Path], None]
    """build(bin_dir, work_dir, log_path) puts every binary into bin_dir."""

    @property
    def dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    def is_built(self) -> bool:
        return (self.dir / ".complete").exists() and all(
            (self.bin_dir / b).exists() for b in self.binaries
        )

    def ensure(self) -> Path:
        """Build unless cached; return the folder holding the binaries."""
        if self.is_built():
            return self.bin_dir
        if netns.in_harness_netns():
            raise BuildError(
                f"{self.name} {self.version} is not built, and inside the harness network "
                "namespace the Go module proxy is unreachable: build it first, outside "
                f"(make setup, or python -m e2e.harness.build {self.name})"
            )
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir.parent / f".{self.name}-{self.version}.lock"):
            if self.is_built():  # another process built it while we waited
                return self.bin_dir
            if self.dir.exists():
                shutil.rmtree(self.dir)
            staging = Path(tempfile.mkdtemp(prefix=f".{self.name}-", dir=self.dir.parent))
            try:
                (staging / "bin").mkdir()
                (staging / "work").mkdir()
                log_path = staging / "build.log"
                _log(f"building {self.name} {self.version} (cold build; log: {log_path})")
                started = time.monotonic()
                self.build(staging / "bin", staging / "work", log_path)
                missing = [b for b in self.binaries if not (staging / "bin" / b).exists()]
                if missing:
                    raise BuildError(f"{self.name}: build produced no {', '.join(missing)}")
                shutil.rmtree(staging / "work", ignore_errors=True)
                (staging / ".complete").write_text(f"{time.monotonic() - started:.1f}\n")
                staging.rename(self.dir)
                _log(f"built {self.name} {self.version} in {time.monotonic() - started:.0f}s")
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return self.bin_dir

    def path(self, binary: str) -> Path:
        return self.ensure() / binary


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _module_go_mod(module: str, version: str, *, log_path: Path, cwd: Path) -> str:
    """The text of a module's go.mod as the proxy serves it."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    with log_path.open("a") as log:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError(f"cannot download {module}@{version}: {proc.stdout}{proc.stderr}")
    match = re.search(r'"GoMod":\s*"([^"]+)"', proc.stdout)
    if not match:
        raise BuildError(f"go mod download gave no go.mod path for {module}@{version}")
    return Path(match.group(1)).read_text()


_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)


def staging_replacements(kubernetes_go_mod: str, kubernetes_version: str) -> dict[str, str]:
    """Map each staging module replaced by a local path to its published v0.Y.Z.

    k8s.io/kubernetes v1.Y.Z publishes its staging modules as v0.Y.Z.
    """
    major, minor, patch = kubernetes_version.lstrip("v").split(".", 2)
    if major != "1":
        raise BuildError(f"unexpected Kubernetes version {kubernetes_version}")
    published = f"v0.{minor}.{patch}"
    modules = sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))
    if not modules:
        raise BuildError("found no staging replacements in k8s.io/kubernetes's go.mod")
    return dict.fromkeys(modules, published)


def kubernetes_ldflags(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".", 2)
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


NODE_COMMANDS = ("kubelet", "kube-proxy")


def _write_kubernetes_module(work: Path, log_path: Path) -> None:
    """A go.mod requiring k8s.io/kubernetes with its staging modules pinned to v0.Y.Z."""
    version = versions.KUBERNETES
    go_mod = _module_go_mod("k8s.io/kubernetes", version, log_path=log_path, cwd=work)
    replaces = staging_replacements(go_mod, version)
    lines = [
        "module logicbundle.e2e/kubernetes",
        "",
        "go 1.26",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *[f"\t{m} => {m} {v}" for m, v in replaces.items()],
        ")",
        "",
    ]
    (work / "go.mod").write_text("\n".join(lines))


def _kubernetes_commands(commands: tuple[str, ...]) -> Callable[[Path, Path, Path], None]:
    """Build some of k8s.io/kubernetes/cmd/* (same module, same flags: shared build cache)."""

    def build(bin_dir: Path, work: Path, log_path: Path) -> None:
        version = versions.KUBERNETES
        _write_kubernetes_module(work, log_path)
        _run_go(
            [
                "go",
                "build",
                "-mod=mod",
                "-ldflags",
                kubernetes_ldflags(version),
                "-o",
                str(bin_dir) + "/",
                *[f"k8s.io/kubernetes/cmd/{c}" for c in commands],
            ],
            cwd=work,
            log_path=log_path,
            what=f"Kubernetes {version} ({', '.join(commands)})",
        )

    return build


def _build_in_module(
    *, module: str, version: str, package: str, output: str
) -> Callable[[Path, Path, Path], None]:
    """Build ``package`` from a throwaway module that requires ``module@version``.

    For modules whose own go.mod has relative replaces (so ``go install`` fails).
    """

    def build(bin_dir: Path, work: Path, log_path: Path) -> None:
        (work / "go.mod").write_text(
            f"module logicbundle.e2e/{output}\n\ngo 1.26\n\nrequire {module} {version}\n"
        )
        _run_go(
            ["go", "build", "-mod=mod", "-ldflags", "-s -w", "-o", str(bin_dir / output), package],
            cwd=work,
            log_path=log_path,
            what=f"{output} {version}",
        )

    return build


def _build_in_module_source(
    *, module: str, version: str, package: str, output: str
) -> Callable[[Path, Path, Path], None]:
    """Build ``package`` inside a copy of ``module@version``'s own source tree.

    For modules whose go.mod has a ``replace`` (so neither ``go install`` nor a
    requiring module builds it as released): the module's own go.mod and go.sum
    pin every dependency.
    """

    def build(bin_dir: Path, work: Path, log_path: Path) -> None:
        src = _module_dir(module, version, cwd=work, log_path=log_path)
        tree = work / "src"
        shutil.copytree(src, tree)
        for path in (tree, *tree.rglob("*")):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        _run_go(
            [
                "go",
                "build",
                "-mod=readonly",
                "-ldflags",
                "-s -w",
                "-o",
                str(bin_dir / output),
                package,
            ],
            cwd=tree,
            log_path=log_path,
            what=f"{output} {version}",
        )

    return build


def _go_install(*packages: str, version: str) -> Callable[[Path, Path, Path], None]:
    def build(bin_dir: Path, work: Path, log_path: Path) -> None:
        for package in packages:
            _run_go(
                ["go", "install", "-ldflags", "-s -w", f"{package}@{version}"],
                cwd=work,
                log_path=log_path,
                what=f"{package.rsplit('/', 1)[-1]} {version}",
                env={"GOBIN": str(bin_dir)},
            )

    return build


def _build_kwok(bin_dir: Path, work: Path, log_path: Path) -> None:
    _go_install("sigs.k8s.io/kwok/cmd/kwok", version=versions.KWOK)(bin_dir, work, log_path)
    # kwok v0.8 ships no default stages in the binary: collect them from the module.
    src = _module_dir("sigs.k8s.io/kwok", versions.KWOK, cwd=work, log_path=log_path)
    stage_root = src / "kustomize" / "stage"
    stages = bin_dir.parent / "stages"
    stages.mkdir(exist_ok=True)
    wanted = {
        "node": ["node-initialize.yaml", "node-heartbeat-with-lease.yaml"],
        "pod": ["pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"],
    }
    for kind, names in wanted.items():
        found = {p.name: p for p in stage_root.rglob("*.yaml") if p.parent.parent.name == kind}
        for name in names:
            if name not in found:
                raise BuildError(f"kwok {versions.KWOK}: no stage {kind}/{name} in {stage_root}")
            shutil.copyfile(found[name], stages / name)


def _module_dir(
    module: str, version: str, *, cwd: Path, log_path: Path, toolchain: str | None = None
) -> Path:
    env = _go_env()
    if toolchain is not None:  # a module whose go.mod asks for a newer Go than the machine's
        env["GOTOOLCHAIN"] = toolchain
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    with log_path.open("a") as log:
        log.write(proc.stdout + proc.stderr)
    match = re.search(r'"Dir":\s*"([^"]+)"', proc.stdout)
    if proc.returncode != 0 or not match:
        raise BuildError(f"cannot download {module}@{version}: {proc.stderr}")
    return Path(match.group(1))


KUBERNETES = Component(
    name="kubernetes",
    version=versions.KUBERNETES,
    binaries=KUBERNETES_COMMANDS,
    build=_kubernetes_commands(KUBERNETES_COMMANDS),
)
KUBERNETES_NODE = Component(
    name="kubernetes-node",
    version=versions.KUBERNETES,
    binaries=NODE_COMMANDS,
    build=_kubernetes_commands(NODE_COMMANDS),
)
ETCD = Component(
    name="etcd",
    version=versions.ETCD,
    binaries=("etcd",),
    build=_build_in_module(
        module="go.etcd.io/etcd/server/v3",
        version=versions.ETCD,
        package="go.etcd.io/etcd/server/v3",
        output="etcd",
    ),
)
KWOK = Component(name="kwok", version=versions.KWOK, binaries=("kwok",), build=_build_kwok)
COSIGN = Component(
    name="cosign",
    version=versions.COSIGN,
    binaries=("cosign",),
    build=_go_install("github.com/sigstore/cosign/v3/cmd/cosign", version=versions.COSIGN),
)
ORAS = Component(
    name="oras",
    version=versions.ORAS,
    binaries=("oras",),
    build=_go_install("oras.land/oras/cmd/oras", version=versions.ORAS),
)
COREDNS = Component(
    name="coredns",
    version=versions.COREDNS,
    binaries=("coredns",),
    build=_go_install("github.com/coredns/coredns", version=versions.COREDNS),
)
HELM = Component(
    name="helm",
    version=versions.HELM,
    binaries=("helm",),
    build=_go_install("helm.sh/helm/v3/cmd/helm", version=versions.HELM),
)

JAEGER = Component(
    name="jaeger",
    version=versions.JAEGER,
    binaries=("jaeger",),
    build=_build_in_module_source(
        module="github.com/jaegertracing/jaeger",
        version=versions.JAEGER,
        package="./cmd/jaeger",
        output="jaeger",
    ),
)
"""Jaeger v2 (all-in-one, in-memory storage): the trace backend of e2e/suites/test_tracing.py."""


KSTATUS_SOURCE = Path(__file__).resolve().parent / "kstatus"
"""``main.go``, ``go.mod`` and ``go.sum`` of the kstatus checker (sigs.k8s.io/cli-utils)."""

_KSTATUS_FILES = ("main.go", "go.mod", "go.sum")


def _kstatus_version() -> str:
    """``CLI_UTILS`` plus a hash of the checker's source, so an edit rebuilds it."""
    digest = hashlib.sha256()
    for name in _KSTATUS_FILES:
        digest.update((KSTATUS_SOURCE / name).read_bytes())
    return f"{versions.CLI_UTILS}-{digest.hexdigest()[:10]}"


def _build_kstatus(bin_dir: Path, work: Path, log_path: Path) -> None:
    go_mod = (KSTATUS_SOURCE / "go.mod").read_text()
    if not re.search(
        rf"^\s*sigs\.k8s\.io/cli-utils {re.escape(versions.CLI_UTILS)}$", go_mod, re.M
    ):
        raise BuildError(
            f"e2e/harness/kstatus/go.mod does not require sigs.k8s.io/cli-utils "
            f"{versions.CLI_UTILS} (e2e/versions.py): update both together"
        )
    for name in _KSTATUS_FILES:
        shutil.copyfile(KSTATUS_SOURCE / name, work / name)
    _run_go(
        ["go", "build", "-mod=readonly", "-ldflags", "-s -w", "-o", str(bin_dir / "kstatus"), "."],
        cwd=work,
        log_path=log_path,
        what=f"kstatus (cli-utils {versions.CLI_UTILS})",
    )


KSTATUS = Component(
    name="kstatus", version=_kstatus_version(), binaries=("kstatus",), build=_build_kstatus
)

ARGOLUA_SOURCE = Path(__file__).resolve().parent / "argolua"
"""``main.go``, ``go.mod`` and ``go.sum`` of the Argo CD Lua checker (argo-cd/v3's util/lua)."""

_ARGOLUA_FILES = ("main.go", "go.mod", "go.sum")


def _argolua_version() -> str:
    """``ARGO_CD`` plus a hash of the checker's source, so an edit rebuilds it."""
    digest = hashlib.sha256()
    for name in _ARGOLUA_FILES:
        digest.update((ARGOLUA_SOURCE / name).read_bytes())
    return f"{versions.ARGO_CD}-{digest.hexdigest()[:10]}"


def _build_argolua(bin_dir: Path, work: Path, log_path: Path) -> None:
    go_mod = (ARGOLUA_SOURCE / "go.mod").read_text()
    if not re.search(
        rf"^\s*github\.com/argoproj/argo-cd/v3 {re.escape(versions.ARGO_CD)}$", go_mod, re.M
    ):
        raise BuildError(
            f"e2e/harness/argolua/go.mod does not require github.com/argoproj/argo-cd/v3 "
            f"{versions.ARGO_CD} (e2e/versions.py): update both together"
        )
    for name in _ARGOLUA_FILES:
        shutil.copyfile(ARGOLUA_SOURCE / name, work / name)
    _run_go(
        ["go", "build", "-mod=readonly", "-ldflags", "-s -w", "-o", str(bin_dir / "argolua"), "."],
        cwd=work,
        log_path=log_path,
        what=f"argolua (argo-cd {versions.ARGO_CD})",
        # argo-cd v3.6 needs Go 1.27; only this build takes that toolchain (from the module proxy).
        env={"GOTOOLCHAIN": versions.ARGO_CD_GO_TOOLCHAIN},
    )


ARGOLUA = Component(
    name="argolua", version=_argolua_version(), binaries=("argolua",), build=_build_argolua
)
"""Argo CD's own Lua runtime (util/lua on gopher-lua) running logicbundle's argocd-cm scripts."""

FLUX_CONTROLLERS = ("source-controller", "kustomize-controller")


def _flux_version() -> str:
    """Both controllers' versions, plus a hash of the replaces, so a change rebuilds them."""
    digest = hashlib.sha256(repr(sorted(versions.FLUX_REPLACES.items())).encode())
    return (
        f"sc{versions.FLUX_SOURCE_CONTROLLER}-kc{versions.FLUX_KUSTOMIZE_CONTROLLER}"
        f"-{digest.hexdigest()[:8]}"
    )


def _writable_copy(src: Path, dest: Path) -> None:
    """Copy a (read-only) module cache folder to ``dest``, writable."""
    shutil.copytree(src, dest)
    for path in (dest, *dest.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


def _build_flux(bin_dir: Path, work: Path, log_path: Path) -> None:
    """Flux's source-controller and kustomize-controller, each in a copy of its own module.

    Each go.mod replaces its ``api`` module by ``./api``, which the published module
    leaves out: the ``api`` module of the same version is copied there.  The two
    builds run one after the other with the same build cache (the second reuses
    most of the first's packages: controller-runtime, client-go, fluxcd/pkg), niced
    so the machine stays usable.  Their CRDs go to ``crds/`` beside ``bin/``.
    """
    crds = bin_dir.parent / "crds"
    crds.mkdir(exist_ok=True)
    wanted = {
        "source-controller": versions.FLUX_SOURCE_CONTROLLER,
        "kustomize-controller": versions.FLUX_KUSTOMIZE_CONTROLLER,
    }
    for name, version in wanted.items():
        module = f"github.com/fluxcd/{name}"
        tree = work / name
        _writable_copy(_module_dir(module, version, cwd=work, log_path=log_path), tree)
        go_mod = (tree / "go.mod").read_text()
        if not re.search(rf"^replace {re.escape(module)}/api => \./api$", go_mod, re.M):
            raise BuildError(f"{module} {version}: its go.mod no longer replaces ./api")
        shutil.rmtree(tree / "api", ignore_errors=True)
        _writable_copy(
            _module_dir(f"{module}/api", version, cwd=work, log_path=log_path), tree / "api"
        )
        replaces = versions.FLUX_REPLACES.get(name, ())
        for replace in replaces:
            _run_go(
                ["go", "mod", "edit", "-replace", replace],
                cwd=tree,
                log_path=log_path,
                what=f"{name} go.mod",
            )
        _run_go(
            [
                "nice",
                "-n",
                "10",
                "go",
                "build",
                # A replace changes go.sum's needs: let go update it (from the proxy).
                "-mod=mod" if replaces else "-mod=readonly",
                "-ldflags",
                "-s -w",
                "-o",
                str(bin_dir / name),
                ".",
            ],
            cwd=tree,
            log_path=log_path,
            what=f"{name} {version}",
        )
        bases = sorted((tree / "config" / "crd" / "bases").glob("*.yaml"))
        if not bases:
            raise BuildError(f"{module} {version}: no CRDs in config/crd/bases")
        for crd in bases:
            shutil.copyfile(crd, crds / crd.name)


FLUX = Component(name="flux", version=_flux_version(), binaries=FLUX_CONTROLLERS, build=_build_flux)
"""Flux's source-controller and kustomize-controller, and their CRDs (``crds/``)."""


ARGOCD_CRDS: tuple[str, ...] = (
    "application-crd.yaml",
    "applicationset-crd.yaml",
    "appproject-crd.yaml",
)
"""Argo CD's CRDs, from ``manifests/crds`` of its Go module (the docs show an Application)."""


def _copy_argocd_crds(bin_dir: Path, work: Path, log_path: Path) -> None:
    source = _module_dir(
        "github.com/argoproj/argo-cd/v3",
        versions.ARGO_CD,
        cwd=work,
        log_path=log_path,
        toolchain=versions.ARGO_CD_GO_TOOLCHAIN,
    )
    for name in ARGOCD_CRDS:
        shutil.copyfile(source / "manifests" / "crds" / name, bin_dir / name)


ARGOCD_CRDS_COMPONENT = Component(
    name="argocd-crds", version=versions.ARGO_CD, binaries=ARGOCD_CRDS, build=_copy_argocd_crds
)


def argocd_crds() -> list[Path]:
    """Argo CD's CRD files (no controller runs them: the docs' objects are dry-run against them)."""
    bin_dir = ARGOCD_CRDS_COMPONENT.ensure()
    return [bin_dir / name for name in ARGOCD_CRDS]


def _generate_helmrelease_crd(bin_dir: Path, work: Path, log_path: Path) -> None:
    tools = work / "tools"
    _run_go(
        [
            "go",
            "install",
            f"sigs.k8s.io/controller-tools/cmd/controller-gen@{versions.CONTROLLER_TOOLS}",
        ],
        cwd=work,
        log_path=log_path,
        what=f"controller-gen {versions.CONTROLLER_TOOLS}",
        env={"GOBIN": str(tools)},
    )
    api = work / "api"
    _writable_copy(
        _module_dir(
            "github.com/fluxcd/helm-controller/api",
            versions.FLUX_HELM_CONTROLLER_API,
            cwd=work,
            log_path=log_path,
        ),
        api,
    )
    _run_go(
        [str(tools / "controller-gen"), "crd", "paths=./...", f"output:crd:dir={bin_dir}"],
        cwd=api,
        log_path=log_path,
        what=f"the HelmRelease CRD (helm-controller/api {versions.FLUX_HELM_CONTROLLER_API})",
    )


FLUX_HELM_CRDS = Component(
    name="flux-helm-crds",
    version=f"{versions.FLUX_HELM_CONTROLLER_API}-cg{versions.CONTROLLER_TOOLS}",
    binaries=("helm.toolkit.fluxcd.io_helmreleases.yaml",),
    build=_generate_helmrelease_crd,
)
"""Flux's HelmRelease CRD, generated by controller-gen from helm-controller's API module; no
helm-controller runs (the docs' HelmRelease is dry-run against it)."""


def flux_helm_crds() -> list[Path]:
    """The HelmRelease CRD file."""
    bin_dir = FLUX_HELM_CRDS.ensure()
    return [bin_dir / name for name in FLUX_HELM_CRDS.binaries]


def flux_crds() -> list[Path]:
    """The CRD files of the built Flux controllers."""
    return sorted((FLUX.ensure().parent / "crds").glob("*.yaml"))


ALL: dict[str, Component] = {
    c.name: c
    for c in (
        KUBERNETES,
        ETCD,
        KWOK,
        COSIGN,
        ORAS,
        HELM,
        KSTATUS,
        ARGOLUA,
        KUBERNETES_NODE,
        COREDNS,
        JAEGER,
        FLUX,
        ARGOCD_CRDS_COMPONENT,
        FLUX_HELM_CRDS,
    )
}


def main(argv: list[str]) -> int:
    names = argv or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown component(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
        return 2
    started = time.monotonic()
    for name in names:
        component = ALL[name]
        if component.is_built():
            _log(f"{name} {component.version}: cached in {component.dir}")
        else:
            component.ensure()
    _log(f"all built in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
