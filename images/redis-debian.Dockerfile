# Stand-in for the official redis image where no container registry is reachable: Debian's
# `redis-server` package on the Debian base image built by scripts/airgap-prepare.sh.
# Same data directory and user id (999) as the official image; compose.yaml passes the whole
# `redis-server ...` command, so it runs either unchanged.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# The user first, so the package adopts id 999 instead of picking one.
# The base is a Debian release built by debootstrap: its archive pins the package versions.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid redis --home-dir /data --shell /usr/sbin/nologin redis \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data
USER 999:999
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
