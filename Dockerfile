# syntax=docker/dockerfile:1
# One image for every Lookback service; the service is the container's argument:
#   docker run ghcr.io/lookback/lookback:0.1.0 decider --help
# Runs as a numeric non-root user and writes nothing to its root filesystem:
# HOME is /tmp (an emptyDir in Kubernetes) and the embedded SQLite files, if
# used at all, go under /data (a volume). Manifests: k8s/.
FROM python:3.11-slim

# Install the package (not editable) from the build context, which is bind-
# mounted for this one step so that no source is left in a layer.
RUN --mount=type=bind,target=/src,rw \
    pip install --no-cache-dir --disable-pip-version-check -c /src/constraints.txt /src \
    && install -d -o 10001 -g 10001 /data

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

WORKDIR /data
USER 10001:10001
ENTRYPOINT ["lookback", "serve"]
