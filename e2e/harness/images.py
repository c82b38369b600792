"""Build the e2e container images without a Docker engine or Docker Hub, and push them.

Four images, all built with buildah into its own storage under the harness cache
(``~/.cache/logicbundle-e2e/buildah``; nothing touches ``/var/lib/containers``):

* ``localhost/logicbundle-e2e/debian-python:12`` -- the base: Debian 12 ``minbase``
  with ``python3``, ``python3-venv`` and ``ca-certificates``, made by ``mmdebstrap``
  from the machine's apt sources and imported as a one-layer OCI image.  Cached by a
  key over the package list, the suite and the mmdebstrap options; the root
  filesystem tarball is kept too, so a wiped buildah store is rebuilt offline.
* ``localhost/logicbundle-e2e/pause:3.10`` -- the pod sandbox image (``pause.c`` in
  ``e2e/harness/pause``, ``gcc -static``), from scratch, running as 65535.
* ``localhost/logicbundle-e2e/logicbundle:<hash>`` -- the repository's ``Dockerfile``
  built by ``buildah bud --layers --network none`` on the Debian base.  The hash covers
  the build context (Dockerfile, requirements/runtime.txt, pyproject.toml, README.md,
  operator/) and the base's key.  The build is offline: the hash-pinned wheels (and the
  build backend, hatchling) are downloaded on the host once into a wheelhouse, which is
  mounted read-only into the ``RUN`` steps together with a ``/etc/pip.conf`` saying
  ``no-index`` / ``find-links = /wheels``.  The Dockerfile itself is unchanged for
  ``docker build`` users: the mounts exist only in the build stage's ``RUN`` steps and
  nothing of them reaches the final stage.
* ``localhost/logicbundle-e2e/sample-app:<hash>`` -- ``examples/sample_app/Dockerfile``
  on top of the project image.

``ensure_built()`` builds what is missing and returns the references; ``push_images()``
pushes pause, logicbundle and sample-app to a plain-HTTP registry (only the local store
and the registry are needed, so it runs inside the harness's network namespace);
``image_sizes()`` measures compressed and unpacked sizes.

CLI: ``python -m e2e.harness.images build|sizes|push HOST [--prefix P]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.harness.build import _locked, cache_root

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "localhost/logicbundle-e2e"
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause" / "pause.c"
SAMPLE_DOCKERFILE = "examples/sample_app/Dockerfile"

# -- the base image -----------------------------------------------------------------------
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
)
BASE_TAG = "12"
PAUSE_TAG = "3.10"

# -- the project image --------------------------------------------------------------------
# What the Dockerfile copies (plus itself): a change here is a new image.
PROJECT_CONTEXT = (
    "Dockerfile",
    "requirements/runtime.txt",
    "pyproject.toml",
    "README.md",
    "operator",
)
SAMPLE_CONTEXT = (SAMPLE_DOCKERFILE, "examples")
_IGNORED_PARTS = ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")
_IGNORED_SUFFIXES = (".pyc", ".pyo")
# The runtime wheels are cp311 for x86_64; cryptography and pynacl need manylinux_2_34,
# Debian 12 has glibc 2.36.
WHEEL_PYTHON = "3.11"
WHEEL_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
PIP_CONF = "[global]\nno-index = true\nfind-links = /wheels\n"

# Images push_images() sends, by their short name.
PUSHED = ("pause", "logicbundle", "sample-app")


class ImageBuildError(RuntimeError):
    """An image could not be built or pushed; the message says why and what to do."""


@dataclass(frozen=True)
class Image:
    """One image in the local buildah store: ``localhost/logicbundle-e2e/<name>:<tag>``."""

    name: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{NAMESPACE}/{self.name}:{self.tag}"


@dataclass(frozen=True)
class BuiltImages:
    """The images ``ensure_built()`` made sure of, and how long each build took this time."""

    base: Image
    pause: Image
    logicbundle: Image
    sample_app: Image
    # Seconds per step actually run by this call (empty when everything was cached).
    timings: dict[str, float] = field(default_factory=dict)

    def pushable(self) -> dict[str, Image]:
        return {"pause": self.pause, "logicbundle": self.logicbundle, "sample-app": self.sample_app}


@dataclass(frozen=True)
class PushedImage:
    """An image in a registry: ``reference`` is ``host/prefix/name:tag``."""

    reference: str
    digest: str

    @property
    def pinned(self) -> str:
        """``host/prefix/name@sha256:...``: what a pod spec should use."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


@dataclass(frozen=True)
class ImageSize:
    """Bytes of an image as pushed (gzip layers + config) and unpacked (layer tars)."""

    compressed: int
    unpacked: int


def _log(msg: str) -> None:
    print(f"[e2e.harness.images] {msg}", file=sys.stderr, flush=True)


# -- cache keys (pure) --------------------------------------------------------------------


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def base_key(
    packages: Sequence[str] = BASE_PACKAGES,
    suite: str = SUITE,
    options: Sequence[str] = MMDEBSTRAP_OPTIONS,
) -> str:
    """The base image's cache key: what mmdebstrap is asked for (16 hex digits)."""
    spec = {"packages": sorted(packages), "suite": suite, "options": list(options)}
    return _digest([json.dumps(spec, sort_keys=True).encode()])[:16]


def context_files(root: Path, paths: Sequence[str] = PROJECT_CONTEXT) -> list[Path]:
    """The files under ``paths`` (relative to ``root``), sorted, caches left out."""
    found: list[Path] = []
    for rel in paths:
        top = root / rel
        candidates = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in candidates:
            relative = path.relative_to(root)
            if any(part in _IGNORED_PARTS or part.endswith(".egg-info") for part in relative.parts):
                continue
            if path.suffix in _IGNORED_SUFFIXES or not path.is_file():
                continue
            found.append(path)
    return sorted(found)


def context_hash(root: Path = REPO, paths: Sequence[str] = PROJECT_CONTEXT) -> str:
    """A hash of the build context's file names, modes and contents (16 hex digits)."""
    parts: list[bytes] = []
    for path in context_files(root, paths):
        parts.append(path.relative_to(root).as_posix().encode())
        parts.append(b"x" if os.access(path, os.X_OK) else b"-")
        parts.append(hashlib.sha256(path.read_bytes()).digest())
    return _digest(parts)[:16]


def project_tag(root: Path = REPO, *, base: str | None = None) -> str:
    """The project image's tag: its context and the base it is built on."""
    return _digest([context_hash(root).encode(), (base or base_key()).encode()])[:16]


def sample_tag(root: Path = REPO, *, project: str) -> str:
    """The sample app image's tag: its own context and the project image's tag."""
    return _digest([context_hash(root, SAMPLE_CONTEXT).encode(), project.encode()])[:16]


def pause_tag(source: Path = PAUSE_SOURCE) -> str:
    """The cache tag of the pause image: its version and its source."""
    return f"{PAUSE_TAG}-{_digest([source.read_bytes()])[:12]}"


def build_requires(pyproject: Path) -> list[str]:
    """``[build-system] requires`` of ``pyproject``: the wheelhouse needs them too."""
    import tomllib

    data = tomllib.loads(pyproject.read_text())
    requires: list[str] = data["build-system"]["requires"]
    return list(requires)


def wheelhouse_key(runtime_txt: bytes, requires: Sequence[str]) -> str:
    """The wheelhouse's key: the pinned requirements, the build backend, the platform."""
    spec = json.dumps([list(requires), WHEEL_PYTHON, list(WHEEL_PLATFORMS)]).encode()
    return _digest([runtime_txt, spec])[:16]


# -- buildah ------------------------------------------------------------------------------


def _buildah_dir() -> Path:
    return cache_root() / "buildah"


def storage_driver() -> str:
    """overlay when the kernel and file system take it (probed once and remembered), else vfs."""
    marker = _buildah_dir() / "driver"
    if marker.exists():
        return marker.read_text().strip()
    _buildah_dir().mkdir(parents=True, exist_ok=True)
    driver = "vfs"
    with tempfile.TemporaryDirectory(dir=_buildah_dir()) as probe:
        probe_buildah = ["buildah", "--root", f"{probe}/storage", "--runroot", f"{probe}/run"]
        probe_buildah += ["--storage-driver", "overlay"]
        proc = subprocess.run(
            [*probe_buildah, "from", "scratch"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if proc.returncode == 0:
            driver = "overlay"
        # Overlay mounts of the probe must go before the folder does.
        subprocess.run(
            [*probe_buildah, "rm", "--all"], capture_output=True, check=False, timeout=120
        )
    marker.write_text(driver + "\n")
    return driver


def buildah_command() -> list[str]:
    """``buildah`` with the harness's own storage: never ``/var/lib/containers``."""
    if shutil.which("buildah") is None:
        raise ImageBuildError("buildah is not installed (apt-get install buildah; run make setup)")
    # The same storage and run root as e2e/harness/node_images.py: one store, one set of
    # locks and mount records (two run roots on one store would disagree about mounts).
    runroot = _buildah_dir() / "runroot"
    return [
        "buildah",
        "--root",
        str(_buildah_dir() / "storage"),
        "--runroot",
        str(runroot),
        "--storage-driver",
        storage_driver(),
    ]


def _buildah(*args: str, what: str, timeout: float = 1800, quiet: bool = True) -> str:
    cmd = [*buildah_command(), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{what} failed ($ {' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    if not quiet:
        print(proc.stdout, file=sys.stderr, end="")
    return proc.stdout


def local_references() -> set[str]:
    """Every ``name:tag`` in the harness's buildah store."""
    out = _buildah("images", "--json", what="listing images")
    entries: list[dict[str, object]] = json.loads(out or "[]") or []
    names: set[str] = set()
    for entry in entries:
        listed = entry.get("names") or []
        if isinstance(listed, list):
            names.update(str(n) for n in listed)
    return names


# -- the builds ---------------------------------------------------------------------------


def _images_dir() -> Path:
    path = cache_root() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _base_rootfs(key: str, *, offline: bool) -> Path:
    """The Debian root filesystem tarball for ``key``, made with mmdebstrap once."""
    tarball = _images_dir() / f"debian-python-{key}.tar"
    if tarball.exists():
        return tarball
    if offline:
        raise ImageBuildError(
            f"the Debian base image ({SUITE}: {', '.join(BASE_PACKAGES)}) is not built and "
            "there is no network here: run make setup first"
        )
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    partial = tarball.with_suffix(".partial.tar")
    log = _images_dir() / f"debian-python-{key}.log"
    cmd = [
        "mmdebstrap",
        *MMDEBSTRAP_OPTIONS,
        f"--include={','.join(BASE_PACKAGES)}",
        SUITE,
        str(partial),
    ]
    _log(f"mmdebstrap {SUITE} ({', '.join(BASE_PACKAGES)}), log in {log}")
    with log.open("wb") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, timeout=1800)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = log.read_text(errors="replace")[-2000:]
        raise ImageBuildError(
            f"mmdebstrap failed (needs the Debian mirror: run make setup with network):\n{tail}"
        )
    partial.rename(tarball)
    return tarball


def _build_base(image: Image, key: str, *, offline: bool) -> None:
    tarball = _base_rootfs(key, offline=offline)
    container = _buildah("from", "--pull-never", "scratch", what="buildah from scratch").strip()
    try:
        _buildah("add", container, str(tarball), "/", what="adding the Debian root filesystem")
        _buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "/usr/bin/python3",
            "--label",
            f"org.opencontainers.image.description=Debian {SUITE} minbase + "
            + " ".join(BASE_PACKAGES),
            "--label",
            f"logicbundle.e2e.base-key={key}",
            container,
            what="configuring the base image",
        )
        _buildah("commit", "--rm", "-q", container, image.reference, what="committing the base")
    except BaseException:
        _buildah("rm", container, what="removing the working container")
        raise
    _buildah("tag", image.reference, f"{NAMESPACE}/{image.name}:{BASE_TAG}", what="tagging")


def _build_pause(image: Image) -> None:
    if shutil.which("gcc") is None:
        raise ImageBuildError("gcc is needed for the pause image (apt-get install gcc libc6-dev)")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        proc = subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-Wall", "-o", str(binary), str(PAUSE_SOURCE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if proc.returncode != 0:
            raise ImageBuildError(f"compiling {PAUSE_SOURCE} failed:\n{proc.stderr[-3000:]}")
        container = _buildah("from", "--pull-never", "scratch", what="buildah from scratch").strip()
        try:
            _buildah("copy", "--chmod", "0755", container, str(binary), "/pause", what="copy pause")
            _buildah(
                "config",
                "--user",
                "65535:65535",
                "--entrypoint",
                '["/pause"]',
                "--cmd",
                "",
                "--label",
                "org.opencontainers.image.description=pod sandbox for the logicbundle e2e node",
                container,
                what="configuring the pause image",
            )
            _buildah("commit", "--rm", "-q", container, image.reference, what="committing pause")
        except BaseException:
            _buildah("rm", container, what="removing the working container")
            raise
    _buildah("tag", image.reference, f"{NAMESPACE}/{image.name}:{PAUSE_TAG}", what="tagging")


def wheelhouse(*, offline: bool = False) -> Path:
    """The runtime wheels (hash-checked) and the build backend, downloaded once from PyPI."""
    runtime = REPO / "requirements" / "runtime.txt"
    requires = build_requires(REPO / "pyproject.toml")
    path = cache_root() / f"wheelhouse-{wheelhouse_key(runtime.read_bytes(), requires)}"
    if (path / ".complete").exists():
        return path
    if offline:
        raise ImageBuildError(f"the wheelhouse {path} is missing (no network here): run make setup")
    with _locked(cache_root() / f".{path.name}.lock"):
        if (path / ".complete").exists():
            return path
        staging = path.with_name(path.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        platform_args = [arg for plat in WHEEL_PLATFORMS for arg in ("--platform", plat)]
        common = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            WHEEL_PYTHON,
            "--implementation",
            "cp",
            *platform_args,
            "--dest",
            str(staging),
        ]
        _log(f"downloading the runtime wheels into {path}")
        for extra in (["--require-hashes", "-r", str(runtime)], requires):
            proc = subprocess.run(
                [*common, *extra], capture_output=True, text=True, check=False, timeout=1800
            )
            if proc.returncode != 0:
                raise ImageBuildError(
                    "downloading the wheels failed (needs PyPI: run make setup with network):\n"
                    + proc.stderr[-3000:]
                )
        (staging / ".complete").write_text("\n")
        shutil.rmtree(path, ignore_errors=True)
        staging.rename(path)
    return path


def _build_project(image: Image, base: Image, *, offline: bool) -> None:
    wheels = wheelhouse(offline=offline)
    with tempfile.TemporaryDirectory() as tmp:
        pip_conf = Path(tmp) / "pip.conf"
        pip_conf.write_text(PIP_CONF)
        _log(f"buildah bud {image.reference} (offline, wheels from {wheels})")
        _buildah(
            "bud",
            "--layers",
            "--network",
            "none",
            "--pull=never",
            "--build-arg",
            f"PYTHON_IMAGE={base.reference}",
            "--volume",
            f"{wheels}:/wheels:ro",
            "--volume",
            f"{pip_conf}:/etc/pip.conf:ro",
            "--label",
            f"logicbundle.e2e.context={image.tag}",
            "--file",
            str(REPO / "Dockerfile"),
            "--tag",
            image.reference,
            str(REPO),
            what=f"building {image.reference} from Dockerfile",
        )
    version = _buildah_run_image(image, ["logicbundle", "--version"])
    if not version.startswith("logicbundle "):
        raise ImageBuildError(f"{image.reference}: logicbundle --version said {version!r}")


def _build_sample(image: Image, project: Image) -> None:
    _log(f"buildah bud {image.reference}")
    _buildah(
        "bud",
        "--layers",
        "--network",
        "none",
        "--pull=never",
        "--build-arg",
        f"BASE_IMAGE={project.reference}",
        "--file",
        str(REPO / SAMPLE_DOCKERFILE),
        "--tag",
        image.reference,
        str(REPO),
        what=f"building {image.reference} from {SAMPLE_DOCKERFILE}",
    )


def _buildah_run_image(image: Image, command: Sequence[str]) -> str:
    """Run ``command`` in a throwaway container of ``image`` (no network) and return stdout."""
    container = _buildah("from", "--pull-never", image.reference, what="buildah from").strip()
    try:
        return _buildah(
            "run", "--network", "none", container, "--", *command, what=f"{command} in {image}"
        ).strip()
    finally:
        _buildah("rm", container, what="removing the working container")


def expected_images() -> BuiltImages:
    """The images the current tree asks for (nothing is built or checked)."""
    key = base_key()
    project = project_tag(REPO, base=key)
    return BuiltImages(
        base=Image("debian-python", f"{BASE_TAG}-{key}"),
        pause=Image("pause", pause_tag()),
        logicbundle=Image("logicbundle", project),
        sample_app=Image("sample-app", sample_tag(REPO, project=project)),
    )


def ensure_built(*, offline: bool = False) -> BuiltImages:
    """Build whatever image is missing or stale; fast (one ``buildah images``) when all exist.

    ``offline``: no network here (e.g. inside the harness's network namespace); the base's
    root filesystem and the wheelhouse must then be cached already, the image builds
    themselves need no network.  Raises ``ImageBuildError`` naming what to run otherwise.
    """
    wanted = expected_images()
    timings: dict[str, float] = {}
    have = local_references()
    if all(i.reference in have for i in (wanted.base, wanted.pause, *wanted.pushable().values())):
        return wanted
    with _locked(_buildah_dir() / ".build.lock"):
        have = local_references()

        def step(name: str, image: Image, build: Callable[[], None]) -> None:
            if image.reference in have:
                return
            started = time.monotonic()
            try:
                build()
            except subprocess.TimeoutExpired as exc:
                raise ImageBuildError(f"building {image.reference} timed out: {exc}") from exc
            timings[name] = time.monotonic() - started
            _log(f"built {image.reference} in {timings[name]:.1f}s")

        key = base_key()
        step("base", wanted.base, lambda: _build_base(wanted.base, key, offline=offline))
        step("pause", wanted.pause, lambda: _build_pause(wanted.pause))
        step(
            "logicbundle",
            wanted.logicbundle,
            lambda: _build_project(wanted.logicbundle, wanted.base, offline=offline),
        )
        step(
            "sample-app",
            wanted.sample_app,
            lambda: _build_sample(wanted.sample_app, wanted.logicbundle),
        )
    return BuiltImages(
        base=wanted.base,
        pause=wanted.pause,
        logicbundle=wanted.logicbundle,
        sample_app=wanted.sample_app,
        timings=timings,
    )


# -- push and sizes -----------------------------------------------------------------------


def push_images(
    registry_host: str, *, repository_prefix: str, built: BuiltImages | None = None
) -> dict[str, PushedImage]:
    """Push pause, logicbundle and sample-app to the plain-HTTP registry at ``registry_host``.

    Returns, by short name, ``host/prefix/name:tag`` and the manifest digest.  Needs only
    the local buildah store and the registry (no build, no other network).  ``built``: the
    images to push (default: those the current tree asks for, which must exist).
    """
    built = built or expected_images()
    have = local_references()
    missing = [i.reference for i in built.pushable().values() if i.reference not in have]
    if missing:
        raise ImageBuildError(
            f"not built: {', '.join(missing)} (run python -m e2e.harness.images build)"
        )
    pushed: dict[str, PushedImage] = {}
    prefix = repository_prefix.strip("/")
    with tempfile.TemporaryDirectory() as tmp:
        for short, image in built.pushable().items():
            tag = PAUSE_TAG if short == "pause" else image.tag
            reference = (
                f"{registry_host}/{prefix}/{image.name}:{tag}"
                if prefix
                else (f"{registry_host}/{image.name}:{tag}")
            )
            digest_file = Path(tmp) / f"{short}.digest"
            _buildah(
                "push",
                "--tls-verify=false",
                "--retry",
                "0",
                "--digestfile",
                str(digest_file),
                image.reference,
                f"docker://{reference}",
                what=f"pushing {image.reference} to {reference}",
                timeout=900,
            )
            pushed[short] = PushedImage(reference=reference, digest=digest_file.read_text().strip())
    return pushed


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def _gunzipped_size(path: Path) -> int:
    total = 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            total += len(chunk)
    return total


def layout_sizes(layout: Path, manifest_digest: str) -> ImageSize:
    """Sizes of one image in an OCI layout: blobs as stored, and layers uncompressed."""
    manifest = json.loads(_blob(layout, manifest_digest).read_text())
    compressed = int(manifest["config"]["size"])
    unpacked = 0
    for layer in manifest["layers"]:
        compressed += int(layer["size"])
        path = _blob(layout, layer["digest"])
        if "gzip" in layer["mediaType"]:
            unpacked += _gunzipped_size(path)
        else:
            unpacked += path.stat().st_size
    return ImageSize(compressed=compressed, unpacked=unpacked)


def image_sizes(images: dict[str, Image] | None = None) -> dict[str, ImageSize]:
    """Compressed (as a push sends it: gzip layers + config) and unpacked bytes per image.

    Pushes each image to a throwaway OCI layout, as ``buildah push`` to a registry would.
    """
    chosen = images if images is not None else expected_images().pushable()
    sizes: dict[str, ImageSize] = {}
    with tempfile.TemporaryDirectory(dir=_buildah_dir()) as tmp:
        for short, image in chosen.items():
            layout = Path(tmp) / short
            digest_file = Path(tmp) / f"{short}.digest"
            _buildah(
                "push",
                "--digestfile",
                str(digest_file),
                image.reference,
                f"oci:{layout}",
                what=f"writing {image.reference} as an OCI layout",
            )
            sizes[short] = layout_sizes(layout, digest_file.read_text().strip())
    return sizes


# -- CLI ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.harness.images", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build the images that are missing")
    build_cmd.add_argument("--offline", action="store_true", help="fail instead of downloading")
    sub.add_parser("sizes", help="print each image's compressed and unpacked size")
    push_cmd = sub.add_parser("push", help="push to a plain-HTTP registry")
    push_cmd.add_argument("registry_host", help="e.g. 127.0.0.1:5000")
    push_cmd.add_argument("--prefix", default="logicbundle-e2e")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            started = time.monotonic()
            built = ensure_built(offline=args.offline)
            for image in (built.base, built.pause, built.logicbundle, built.sample_app):
                print(image.reference)
            done = ", ".join(f"{k} {v:.1f}s" for k, v in built.timings.items()) or "all cached"
            _log(f"images ready in {time.monotonic() - started:.1f}s ({done})")
        elif args.command == "sizes":
            for short, size in image_sizes().items():
                print(
                    f"{short:12} compressed {size.compressed / 1e6:7.1f} MB"
                    f"  unpacked {size.unpacked / 1e6:7.1f} MB ({size.unpacked / 2**20:.1f} MiB)"
                )
        else:
            for short, pushed in push_images(
                args.registry_host, repository_prefix=args.prefix
            ).items():
                print(f"{short:12} {pushed.reference} {pushed.digest}")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
