# syntax=docker/dockerfile:1
# One image for the operator, the distributor and the in-pod agent:
#   logicbundle operator | logicbundle agent | logicbundle <any sub-command>
#
# Why one image (measured, docs/operations.md "The image"): the agent imports
# only the logicbundle package and the standard library, so a separate agent
# image would save disk and pull bytes (the environment layer: 208 MiB
# unpacked, 39.5 MB compressed, once per node) but no memory in any pod; not
# worth a second image to build, sign, scan and keep in version step with the
# operator. Built with buildah on a Debian 12 base, the whole image is 397 MB
# unpacked, 102 MB compressed.
#
# PYTHON_IMAGE may be any Debian-based image with python3 and its venv module:
# the official python image (python3 in /usr/local/bin) or Debian's python3
# (/usr/bin/python3, no `python` command), which the e2e harness builds with
# mmdebstrap (e2e/harness/images.py). Both stages use the same base, so the
# environment's bin/python link resolves in the final stage. That harness builds
# offline: it mounts a wheelhouse and an /etc/pip.conf (no-index, find-links)
# into the build stage's RUN steps; nothing here depends on them.
#
# The build stage installs the hash-pinned runtime dependencies and the
# package into a virtual environment, then uninstalls pip and setuptools from
# it; the final stage copies only that environment onto the same slim base.
# So the application environment (/opt/logicbundle) has no pip and no caches,
# and the image has no compilers; the base image's own Python in /usr/local
# still ships pip (/usr/local/bin/pip), which nothing here uses.
# Bytecode is compiled at build time: the root filesystem is read-only at run
# time, and without .pyc files the operator would start 2.5 s slower.
#
# The same steps run in CI in a clean virtual environment (e2e/suites/test_chart.py,
# test_the_dockerfile_install_steps_work_in_a_clean_virtual_environment), and
# hadolint checks this file.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN python3 -m venv /opt/logicbundle \
 && /opt/logicbundle/bin/pip install --require-hashes --only-binary=:all: -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
# --no-deps: every dependency came hash-checked from runtime.txt above.
RUN /opt/logicbundle/bin/pip install --no-deps . \
 && /opt/logicbundle/bin/pip uninstall -y pip setuptools \
 && find /opt/logicbundle -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/logicbundle/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/logicbundle/lib \
 && /opt/logicbundle/bin/logicbundle --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="logicbundle" \
      org.opencontainers.image.description="Operator, distributor and in-pod agent for hot-reloaded, signed logic bundles" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/logicbundle /opt/logicbundle
ENV PATH=/opt/logicbundle/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric non-root user, so runAsNonRoot can be checked without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["logicbundle"]
CMD ["operator"]
