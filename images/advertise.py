"""Start a Ray node that other hosts reach at its host's address, from inside a bridge network.

A Ray node advertises one address (`--node-ip-address`), and some of its servers (the runtime-env
agent, the dashboard agent's HTTP side) bind that exact address. A container's own interfaces only
hold its private bridge address, so this adds the host's address to the container's loopback
(its own network namespace, hence NET_ADMIN), where those servers can bind it; traffic from other
hosts still arrives through the ports compose publishes on that address. Then it drops to the
`ray` user and runs the command.

    python3 advertise.py 10.0.0.7 ray start --node-ip-address=10.0.0.7 ...
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import pwd
import socket
import struct
import sys

SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
ALIAS = b"lo:ray"  # an alias of the loopback interface, as `ifconfig lo:ray` would name it


def is_local(address: str) -> bool:
    """Whether a socket can bind `address` here (it is already on one of our interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def ifreq(name: bytes, address: str) -> bytes:
    """struct ifreq with an AF_INET sockaddr, as the SIOCSIF* ioctls take it."""
    sockaddr = struct.pack("H2s4s8s", socket.AF_INET, b"", socket.inet_aton(address), b"")
    return struct.pack("16s16s", name, sockaddr)


def add_to_loopback(address: str) -> None:
    """`ip addr add ADDRESS/32 dev lo label lo:ray`, by ioctl: the image has no iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCSIFADDR, ifreq(ALIAS, address))
        fcntl.ioctl(sock, SIOCSIFNETMASK, ifreq(ALIAS, "255.255.255.255"))


def drop_privileges(user: str = "ray") -> None:
    """Become `user` for good: the capabilities go with uid 0."""
    account = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.environ.update(HOME=account.pw_dir, USER=user, LOGNAME=user)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    address, command = argv[0], argv[1:]
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        print(f"advertise: {address!r} is not an IPv4 address (RAY_NODE_ADDRESS)", file=sys.stderr)
        return 2
    if ip.is_unspecified or ip.is_loopback:
        print(
            f"advertise: {address} cannot be reached from other hosts; RAY_NODE_ADDRESS is this "
            "host's address on the network the cluster's hosts share",
            file=sys.stderr,
        )
        return 2
    if not is_local(address):
        try:
            add_to_loopback(address)
        except PermissionError:
            print(
                f"advertise: cannot add {address} to this container's loopback: it needs "
                "cap_add NET_ADMIN and to start as root (compose.worker.yaml sets both)",
                file=sys.stderr,
            )
            return 1
        print(f"advertise: {address} added to this container's loopback", flush=True)
    if os.getuid() == 0:
        drop_privileges()
    # The container's own command, as compose gave it (no shell).
    os.execvp(command[0], command)  # nosec B606
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
