# Stand-in for the official haproxy image where no container registry is reachable: Debian's
# `haproxy` package on the Debian base image built by scripts/airgap-prepare.sh. Same config path
# and the same unprivileged user (haproxy, uid 99) as the official image; compose.yaml passes the
# whole `haproxy ...` command, so it runs either unchanged.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# The base is a Debian release built by debootstrap: its archive pins the package versions.
# The package creates its system user; it then gets the official image's ids (99). wget serves
# compose's healthcheck, as the official (Alpine) image's busybox does.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupmod --gid 99 haproxy \
    && usermod --uid 99 --gid 99 haproxy \
    && mkdir -p /usr/local/etc/haproxy
USER 99:99
EXPOSE 8000
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
