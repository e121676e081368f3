"""``dqlite://host:port[,host:port…]/name``: a cluster's seed addresses and a database name."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ("SCHEME", "ClusterAddress", "is_cluster", "parse")

SCHEME = "dqlite://"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_HOST = re.compile(r"[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]")


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where a cluster database is: the nodes to ask first (any of them leads to the leader)
    and the database's name in the cluster."""

    seeds: tuple[str, ...]
    name: str

    def __str__(self) -> str:
        return f"{SCHEME}{','.join(self.seeds)}/{self.name}"


def is_cluster(path: str) -> bool:
    """Is ``path`` a cluster URL (rather than a file)?"""
    return path.startswith(SCHEME)


def parse(url: str) -> ClusterAddress:
    """The seeds and name of ``url``.

    :raises ValueError: not of the form ``dqlite://host:port[,host:port…]/name``
    """
    if not is_cluster(url):
        raise ValueError(f"not a dqlite URL (expected {SCHEME}host:port,…/name): {url!r}")
    rest = url[len(SCHEME) :]
    hosts, slash, name = rest.partition("/")
    if not slash or not name:
        raise ValueError(f"a dqlite URL names its database after the addresses: {url!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"database name {name!r} in {url!r}: use letters, digits, '_', '-' and '.' only"
        )
    seeds: list[str] = []
    for seed in hosts.split(","):
        host, colon, port = seed.strip().rpartition(":")
        if not colon or not _HOST.fullmatch(host) or not port.isdigit():
            raise ValueError(f"{seed!r} in {url!r} is not host:port")
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} in {url!r} is out of range")
        if f"{host}:{int(port)}" not in seeds:
            seeds.append(f"{host}:{int(port)}")
    return ClusterAddress(tuple(seeds), name)
