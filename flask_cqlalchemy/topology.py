"""Datacenters: what the app was told (``CASSANDRA_LOCAL_DC``) against what
the cluster has.

The driver's DC-aware policy sends every request to a coordinator of one
datacenter. Without ``CASSANDRA_LOCAL_DC`` it takes the datacenter of the
contact point it happened to reach first, so an app whose contact points
span datacenters may talk across a WAN without anyone having chosen it. And
a local datacenter the cluster does not have leaves the driver with no node
to use, which it reports as "Unable to connect to any servers". Both are
said here in the words of the config.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import OWN_POLICY, Settings
from .errors import ConfigError

log = logging.getLogger("flask_cqlalchemy")


def datacenters(cluster: Any) -> list[str]:
    """The datacenters of the nodes the driver knows (from the control
    connection's view of ``system.peers``), sorted."""
    metadata = getattr(cluster, "metadata", None)
    if metadata is None:
        return []
    return sorted({host.datacenter for host in metadata.all_hosts() if host.datacenter})


def driver_local_dc(cluster: Any) -> str | None:
    """The datacenter the default profile's DC-aware policy settled on."""
    try:
        policy = cluster.profile_manager.default.load_balancing_policy
    except (AttributeError, KeyError):
        return None
    policy = getattr(policy, "_child_policy", policy)  # inside TokenAwarePolicy
    return getattr(policy, "local_dc", None) or None


def check_connected(cluster: Any, settings: Settings, name: str, key_prefix: str = "") -> None:
    """After a connect: refuse an unknown ``CASSANDRA_LOCAL_DC`` (with
    remote nodes allowed, the driver connects to those and never says so),
    and warn when a multi-datacenter cluster was left to the driver's guess.
    ``key_prefix`` names a bind's keys (``CASSANDRA_BINDS['name'].``)."""
    seen = datacenters(cluster)
    if settings.local_dc is not None:
        _require_known(settings, seen, key_prefix)
        return
    if OWN_POLICY & set(settings.setup_kwargs):
        return  # the app's own policy decides (and may name its local_dc)
    if len(seen) > 1:
        log.warning(
            "%s: the cluster has datacenters %s and %sCASSANDRA_LOCAL_DC is not set; the driver chose %r "
            "(the datacenter of the first contact point it reached) and sends every request to its nodes only. "
            "Set %sCASSANDRA_LOCAL_DC to the datacenter this app runs in.",
            name,
            ", ".join(seen),
            key_prefix,
            driver_local_dc(cluster),
            key_prefix,
        )


def explain_no_host(cluster: Any, settings: Settings, key_prefix: str = "") -> None:
    """After the driver found no node to use: a ``ConfigError`` if that is
    because ``CASSANDRA_LOCAL_DC`` names a datacenter the cluster lacks."""
    if settings.local_dc is not None:
        _require_known(settings, datacenters(cluster), key_prefix)


def _require_known(settings: Settings, seen: list[str], key_prefix: str) -> None:
    if seen and settings.local_dc not in seen:
        raise ConfigError(
            f"{key_prefix}CASSANDRA_LOCAL_DC",
            f"{settings.local_dc!r} is not a datacenter of this cluster; its nodes are in {', '.join(seen)}",
        )
