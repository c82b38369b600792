"""Tiny images for the real node's own tests, from Debian's static busybox.

``busybox`` is ``/bin/busybox`` (package ``busybox-static``) with a symlink
per applet, a ``/tmp``, a ``nobody`` user and ``openssl`` with its libraries
(for ``wget https://``); ``pause`` is the same files with
``sleep`` forever as its entrypoint (a sandbox image, until
``e2e.harness.images`` provides the real one).  Both are committed once into
the harness's buildah storage (``~/.cache/logicbundle-e2e/buildah``), tagged
by the busybox binary's hash, and pushed to a plain-HTTP registry on demand.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from e2e.harness import images
from e2e.harness.proc import HarnessError

BUSYBOX = Path("/bin/busybox")
OPENSSL = Path("/usr/bin/openssl")
RECIPE = "2"
"""Bump when the image's contents change without the binaries changing."""
REPOSITORY_PREFIX = "logicbundle-e2e-node"


def buildah(*args: str) -> str:
    """Run buildah on the harness's store (the one e2e.harness.images uses); its stdout."""
    proc = subprocess.run(
        [*images.buildah_command(), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"buildah {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _tag() -> str:
    digest = hashlib.sha256(RECIPE.encode())
    for binary in (BUSYBOX, OPENSSL):
        if not binary.exists():
            raise HarnessError(f"{binary} is missing (make setup installs busybox-static)")
        digest.update(binary.read_bytes())
    return digest.hexdigest()[:12]


def _shared_libraries(binary: Path) -> list[Path]:
    """The files ``ldd`` says ``binary`` loads (absolute paths)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                libs.append(Path(word))
    return libs


def _rootfs(into: Path) -> None:
    (into / "bin").mkdir(parents=True)
    (into / "tmp").mkdir(mode=0o1777)
    (into / "tmp").chmod(0o1777)
    (into / "etc").mkdir()
    shutil.copy2(BUSYBOX, into / "bin" / "busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (into / "bin" / applet).symlink_to("busybox")
    (into / "etc" / "passwd").write_text(
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
    )
    (into / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    # Busybox's own TLS sends no signature_algorithms, which Go's TLS servers (the API
    # server) refuse; with an ``openssl`` on its PATH, busybox's wget uses it instead.
    for path in (OPENSSL, *_shared_libraries(OPENSSL)):
        target = into / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)


def _local_name(name: str) -> str:
    return f"localhost/{REPOSITORY_PREFIX}/{name}:{_tag()}"


def _exists(ref: str) -> bool:
    try:
        buildah("inspect", "--type", "image", ref)
    except HarnessError:
        return False
    return True


def ensure_built() -> dict[str, str]:
    """Commit the busybox and pause images unless cached; their local names."""
    images = {"busybox": _local_name("busybox"), "pause": _local_name("pause")}
    if all(_exists(ref) for ref in images.values()):
        return images
    with tempfile.TemporaryDirectory(prefix="lb-busybox-") as tmp:
        _rootfs(Path(tmp))
        for name, entrypoint in (
            ("busybox", "[]"),
            ("pause", '["/bin/sleep", "2147483647"]'),
        ):
            container = buildah("from", "scratch")
            try:
                buildah("copy", container, tmp + "/", "/")
                buildah(
                    "config",
                    "--entrypoint",
                    entrypoint,
                    "--cmd",
                    '["/bin/sh"]' if name == "busybox" else "[]",
                    "--env",
                    "PATH=/bin:/usr/bin",
                    container,
                )
                buildah("commit", "-q", container, images[name])
            finally:
                buildah("rm", container)
    return images


def push(registry_host: str) -> dict[str, str]:
    """Push busybox and pause to ``registry_host`` (plain HTTP); their references there."""
    pushed = {}
    for name, local in ensure_built().items():
        remote = f"{registry_host}/{REPOSITORY_PREFIX}/{name}:{_tag()}"
        buildah("push", "--tls-verify=false", local, f"docker://{remote}")
        pushed[name] = remote
    return pushed
