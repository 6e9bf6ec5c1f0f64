# Stand-in for prom/prometheus where no container registry is reachable: Debian's `prometheus`
# package (server and promtool) on the Debian base image built by scripts/airgap-prepare.sh.
# Same entry point, paths and user as the official image, so compose.yaml uses either unchanged.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# The base is a Debian release built by debootstrap: its archive pins the package versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown nobody:nogroup /prometheus
# nobody:nogroup, numeric so that a runtime can verify it is not root
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
