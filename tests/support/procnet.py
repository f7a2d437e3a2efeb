"""Which process holds which TCP socket, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass

ESTABLISHED = "01"


@dataclass(frozen=True)
class TcpSocket:
    inode: int
    local_port: int
    remote: str
    remote_port: int


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    if len(host) == 8:  # IPv4, little-endian
        octets = [str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0)]
        return ".".join(octets), int(port, 16)
    return host, int(port, 16)


def established_sockets() -> dict[int, TcpSocket]:
    """Every established TCP connection of this network namespace, by inode."""
    found: dict[int, TcpSocket] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != ESTABLISHED:
                continue
            (_, local_port), (remote, remote_port) = _address(fields[1]), _address(fields[2])
            inode = int(fields[9])
            if inode:
                found[inode] = TcpSocket(inode, local_port, remote, remote_port)
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets open in process ``pid`` (its fd table)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def sockets_to_port(pid: int, remote_port: int) -> dict[int, TcpSocket]:
    """The established connections to ``remote_port`` process ``pid`` holds, by inode."""
    tcp = established_sockets()
    return {inode: tcp[inode] for inode in socket_inodes(pid) if inode in tcp and tcp[inode].remote_port == remote_port}


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)
