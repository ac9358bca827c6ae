# syntax=docker/dockerfile:1
#
# Production image of twilio-kafka-bridge: `twilio-bridge run`, as uid/gid 10001, on a read-only
# root filesystem.
#
#   docker build -t twilio-kafka-bridge:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE_URL=<repository URL> .
#
# Base image: pinned to an exact CPython patch release on an exact Debian release, used by both
# stages. It is not pinned by digest here because a digest cannot be verified from where this file
# is maintained (no registry is reachable) and a wrong one breaks every build. Where the release
# pipeline can reach the registry, append the digest for immutable builds:
#   FROM python:3.11.15-slim-bookworm@sha256:<digest> AS base
# (`docker buildx imagetools inspect python:3.11.15-slim-bookworm` prints it) and let
# Renovate/Dependabot bump tag and digest together.
FROM python:3.11.15-slim-bookworm AS base


# --- build: a virtualenv holding the project's wheel and its runtime dependencies only ---------
FROM base AS build
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
# Only what the wheel needs (.dockerignore keeps caches and the rest of the tree out); README.md
# is the package's long description.
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# pip builds the wheel (setuptools, from PyPI, in an isolated build environment) with the package
# data bridge/data/*, installs it with the base `dependencies` and the [otel] extra (tracing, off
# unless OTEL_* asks for it; neither [demo] nor [dev]) and byte-compiles every installed module,
# so the read-only runtime never has to write .pyc files.
# pip and setuptools then leave the venv: nothing in the final image can build or install.
# tests/ops/test_dockerfile.py runs this step as it is, in a fresh venv.
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir ".[otel]" \
    && "$VIRTUAL_ENV/bin/pip" uninstall --yes pip setuptools


# --- runtime: the base image plus the venv; no compiler, pip, cache or source tree ----------------
FROM base AS runtime
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="twilio-kafka-bridge" \
      org.opencontainers.image.description="Puts Twilio behind Kafka: request envelopes become Twilio REST calls with one reply each; webhooks become CloudEvents." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify the user from the image
# alone; no home directory and no login shell. --no-log-init: a high uid would otherwise grow
# /var/log/faillog and lastlog to a sparse file of many MB.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bridge

# Owned by root and read-only for the service user: the running code cannot be modified.
COPY --from=build /opt/venv /opt/venv

# Read-only root filesystem: bytecode was compiled at build time and is never written at run
# time; HOME points at /tmp, the only place anything may be written (mount an emptyDir there if
# something needs it; the bridge itself writes nothing).
ENV PATH="/opt/venv/bin:$PATH" \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001

# BRIDGE_HTTP__PORT's default: webhooks, /healthz, /readyz, /metrics.
EXPOSE 8080
# The service drains and commits on SIGTERM (the default, stated for `docker stop` and runtimes).
STOPSIGNAL SIGTERM
# For docker/podman only: Kubernetes ignores HEALTHCHECK and uses the chart's probes. It needs no
# extra tool: the venv's python asks /healthz on the configured port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_HTTP__PORT', '8080'), timeout=4)"]

ENTRYPOINT ["twilio-bridge"]
CMD ["run"]
