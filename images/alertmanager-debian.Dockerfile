# Stand-in for prom/alertmanager where no container registry is reachable: Debian's
# `prometheus-alertmanager` package on the Debian base image built by scripts/airgap-prepare.sh.
# Same entry point, storage path, port and user as the official image, so compose.yaml uses
# either unchanged; wget for the healthcheck, as busybox gives the official image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# The base is a Debian release built by debootstrap: its archive pins the package versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        prometheus-alertmanager wget \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/prometheus-alertmanager /bin/alertmanager \
    && mkdir -p /alertmanager \
    && chown nobody:nogroup /alertmanager
# nobody:nogroup, numeric so that a runtime can verify it is not root
USER 65534:65534
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
