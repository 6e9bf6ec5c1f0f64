# Two images from one file:
#   --target node: the Ray head and workers: Python, the locked dependencies (Ray, torch,
#     transformers) and the node scripts, no application code but the autoscaling policy. It
#     changes only with the lock file, this file, images/*.py or serve/slo_policy.py, so any other
#     edit of serve/ never recreates a Ray node.
#   the final stage (app): node + the application (serve/, scripts/, loadtest/), for the models,
#     deploy and load steps. The deployer ships serve/ to the cluster as a Ray package
#     (runtime_env py_modules), so a code change rolls replicas, not nodes.
#
#   docker build -f images/ray.Dockerfile --target node -t ray-serve-cluster/ray-node .
#   docker build -f images/ray.Dockerfile -t ray-serve-cluster/ray .
#
# BASE_IMAGE defaults to the official Python 3.11 slim image; the lock file names the PyTorch CPU
# wheel index itself. Where no registry is reachable, scripts/airgap-prepare.sh builds a
# Debian-based stand-in and a wheelhouse, and sets both args.
ARG BASE_IMAGE=python:3.11-slim

# Dependencies from the lock file, in a stage of their own so the final image carries neither the
# wheelhouse nor pip's cache, and code changes don't reinstall them.
FROM ${BASE_IMAGE} AS deps
ARG PIP_INSTALL_ARGS=""
COPY requirements.lock /tmp/requirements.lock
COPY images/wheelhouse/ /wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        ${PIP_INSTALL_ARGS} -r /tmp/requirements.lock

FROM ${BASE_IMAGE} AS node
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf-home \
    RAY_USAGE_STATS_ENABLED=0
RUN useradd --create-home --uid 1000 --shell /bin/bash ray \
    && mkdir -p /app /models /ray-targets \
    && chown ray:ray /models /ray-targets
COPY --from=deps /opt/venv /opt/venv
COPY --chown=ray:ray images/node_health.py images/stack_secrets.py images/advertise.py \
    images/ray_targets.py images/rejoin.py /app/images/
# The SLO autoscaling policy, imported by name where Serve checks a config (the head's dashboard)
# and pickled from there to the controller. /app/serve/ has no __init__.py here: a namespace
# package, which the replicas' own `serve` package (runtime_env py_modules) always wins over.
COPY --chown=ray:ray serve/slo_policy.py /app/serve/slo_policy.py
# The `ray` user, numeric so that a runtime can verify it is not root.
USER 1000:1000
WORKDIR /app

# Node health: this node's raylet is running and the cluster's GCS answers.
HEALTHCHECK --interval=10s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python3", "/app/images/node_health.py"]

CMD ["ray", "start", "--head", "--block"]

FROM node AS app
COPY --chown=ray:ray serve/ /app/serve/
COPY --chown=ray:ray scripts/ /app/scripts/
COPY --chown=ray:ray loadtest/ /app/loadtest/
