# syntax=docker/dockerfile:1
# One image for the operator, the distributor and the in-pod agent:
#   logicbundle operator | logicbundle agent | ...
# The build stage installs the pinned runtime dependencies (hash-checked) and
# the package into a virtual environment; the final stage copies only that
# environment onto the slim base, with no compilers and no pip cache.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/logicbundle \
 && /opt/logicbundle/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/logicbundle/bin/pip install --no-deps . \
 && /opt/logicbundle/bin/pip uninstall -y pip \
 && find /opt/logicbundle -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/logicbundle /opt/logicbundle
ENV PATH=/opt/logicbundle/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user, so runAsNonRoot can be checked without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["logicbundle"]
CMD ["operator"]
