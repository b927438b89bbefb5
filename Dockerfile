# syntax=docker/dockerfile:1
# One image for the three programs of onair: onair-operator, onair-gateway and onair-encoder
# (the Helm chart sets `command` per Deployment; the operator sets it on encoder Pods).
#
#   docker build -t ghcr.io/onair-dev/onair:dev .
#
# Stage 1 builds a virtualenv with onair and its dependencies (all from wheels); stage 2 copies only
# that virtualenv onto a slim Python with ffmpeg and nginx-rtmp (the encoder's RTMP front). No
# compilers, pip caches or sources reach the final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/onair
# Dependencies first, so a source change does not re-download them.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/onair/bin/pip install --no-cache-dir -r /tmp/requirements.txt
# onair/operator, onair/api_gateway and onair/encoder are symlinks to the top-level folders.
COPY onair/ onair/
COPY operator/ operator/
COPY api_gateway/ api_gateway/
COPY encoder/ encoder/
RUN /opt/onair/bin/pip install --no-cache-dir --no-deps . \
 && /opt/onair/bin/python -m compileall -q /opt/onair/lib \
 && /opt/onair/bin/onair-operator --help >/dev/null \
 && /opt/onair/bin/onair-encoder --help >/dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="onair" \
      org.opencontainers.image.description="Live video encoding on Kubernetes: operator, encoder and REST gateway" \
      org.opencontainers.image.source="https://github.com/onair-dev/onair" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# ffmpeg: the encoder (libx264, libx265, libvpx, SRT; NVENC, which loads the driver the NVIDIA
# runtime mounts); nginx + nginx-rtmp: the RTMP front that checks stream keys; libsrt: the SRT
# listener that checks streamids (onair/encoder/srt.py loads it; ffmpeg links the same one). Debian's
# packages are tracked by the base image's release, not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg nginx-light libnginx-mod-rtmp libsrt1.5-gnutls \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 onair \
 && useradd --system --uid 10001 --gid onair --home-dir /tmp --shell /usr/sbin/nologin onair
COPY --from=build /opt/onair /opt/onair
ENV PATH=/opt/onair/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# 8080 health/REST, 9090 operator metrics, 1935 RTMP, 9000/udp SRT, 8090 encoder status.
EXPOSE 8080 9090 1935 9000/udp 8090
CMD ["onair-operator"]
