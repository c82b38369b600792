#!/usr/bin/env bash
# Set up everything the demo and the tests need, on a fresh machine or a warm one.
#
#  1. Debian packages: the OCI registry and Prometheus (apt-get, once).
#  2. The Python environment in .venv, exactly as pinned in requirements/dev.txt
#     (hash-checked), plus this project in editable mode.
#  3. The Go-built binaries (Kubernetes, etcd, kwok, cosign, oras, helm), built
#     once from the Go module proxy into ~/.cache/logicbundle-e2e/<name>-<version>/.
#
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# -- 1. Debian packages --------------------------------------------------------------
apt_packages=(docker-registry prometheus containerd runc containernetworking-plugins iptables conntrack buildah mmdebstrap busybox-static)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- 2. Python ------------------------------------------------------------------------
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { say "Python >= 3.11 is needed (found $("$python" --version))"; exit 1; }
stamp=$(cat requirements/dev.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
    say "creating the Python environment in .venv (pinned: requirements/dev.txt)"
    rm -rf .venv
    "$python" -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.txt
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
    echo "$stamp" > .venv/.setup-stamp
fi

# -- 3. Go-built binaries -------------------------------------------------------------
command -v go >/dev/null || { say "Go >= 1.26 is needed to build the local control plane"; exit 1; }
.venv/bin/python -m e2e.harness.build

# -- 4. Container images ----------------------------------------------------------------
# The Debian base (mmdebstrap), the pause image, the project's Dockerfile and the sample
# app, built with buildah into ~/.cache/logicbundle-e2e/buildah (no Docker, no Docker Hub).
.venv/bin/python -m e2e.harness.images build
