"""What moto 5.2.5 lacks for VPC caches, filled the way AWS answers.

moto implements ElastiCache cache clusters and replication groups and EC2 security groups,
but five gaps would make a VPC cache look unlike AWS to the function's lookups and grants.
:func:`install` fills them in moto's own classes, for the rest of the process, so that
``mock_aws`` and the moto server (the embedded AWS) answer alike; responses still go through
moto's serializer and botocore's parsing, in the service's own shapes.

Gaps found in moto 5.2.5 (read from moto/elasticache and moto/ec2, then observed):

1. ``CreateCacheCluster`` / ``DescribeCacheClusters`` omit ``SecurityGroups``, although moto
   keeps the ``SecurityGroupIds`` it was given. AWS answers ``[{SecurityGroupId, Status:
   active}]``.
2. ``ShowCacheNodeInfo`` is ignored: no ``CacheNodes``, so no node ``Endpoint`` (the port of
   a Redis/Valkey cluster); Memcached clusters have no ``ConfigurationEndpoint`` either.
3. ``CreateReplicationGroup`` lists ``MemberClusters`` but creates no cache clusters, so
   describing a member fails with ``CacheClusterNotFound``. In AWS every member is a cache
   cluster carrying the group's security groups, port and ``ReplicationGroupId``.
4. EC2 keeps the rule ``Description`` inside the rule's identity, so a second rule for the
   same source group with another description is added. AWS identifies a rule by protocol,
   ports and source and answers ``InvalidPermission.Duplicate``.
5. ``CreateReplicationGroup`` ignores ``NumCacheClusters`` (without cluster mode it makes a
   primary and ``ReplicasPerNodeGroup`` replicas, so one member unless that is given). AWS
   makes ``NumCacheClusters`` members: ``<id>-001`` (the primary), ``<id>-002``, …
6. ``DescribeSecurityGroupRules`` leaves out the ``Description`` of a rule that references a
   group (it reads only a CIDR range's). AWS returns it for every rule; the function reads it
   as the evidence that a rule is its own.
7. ``DeleteSecurityGroup`` deletes a group that another group's rule references. AWS refuses
   with ``DependencyViolation`` until the rule is gone (so a VPC grant keeps its source group
   from being deleted).

Not filled (the function does not depend on them): moto defaults every engine's port to
6379 (Memcached's is 11211, so callers pass ports explicitly); deleting a replication group
leaves its member clusters; moto accepts description characters EC2 rejects (the function's
adapter never sends them) and references to groups in unpeered VPCs (the same-vpc rule
denies those before any call).

This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, Final

from moto.core.responses import PaginatedResult
from moto.ec2.exceptions import DependencyViolationError
from moto.ec2.models.security_groups import SecurityGroupBackend, SecurityGroupRule
from moto.elasticache.models import CacheCluster, ElastiCacheBackend
from moto.elasticache.responses import ElastiCacheResponse

__all__ = ["install"]

_MEMBERSHIP_ACTIVE: Final = "active"
# Set on every function this module installs, so a second install() recognises its own.
_INSTALLED_MARK: Final = "_cache_ingress_vpc_caches"
_LOCK = threading.Lock()


# --- gap 1 and 2: what a cluster shows -------------------------------------------------------


def _security_groups(cluster: CacheCluster) -> list[dict[str, str]]:
    return [
        {"SecurityGroupId": group_id, "Status": _MEMBERSHIP_ACTIVE}
        for group_id in cluster.security_group_ids
    ]


def _configuration_endpoint(cluster: CacheCluster) -> dict[str, Any] | None:
    if cluster.engine != "memcached":
        return None
    return {
        "Address": f"{cluster.cache_cluster_id}.cfg.use1.cache.amazonaws.com",
        "Port": cluster.port,
    }


class _ClusterWithNodes:
    """A cluster as DescribeCacheClusters shows it with ShowCacheNodeInfo: its nodes too."""

    def __init__(self, cluster: CacheCluster) -> None:
        self._cluster = cluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)

    @property
    def cache_nodes(self) -> list[dict[str, Any]]:
        cluster = self._cluster
        return [
            {
                "CacheNodeId": f"{index:04d}",
                "CacheNodeStatus": "available",
                "Endpoint": {
                    "Address": f"{cluster.cache_cluster_id}-{index:04d}.use1.cache.amazonaws.com",
                    "Port": cluster.port,
                },
            }
            for index in range(1, (cluster.num_cache_nodes or 1) + 1)
        ]


def _describe_cache_clusters(original: Any) -> Any:
    def describe(self: ElastiCacheResponse) -> Any:
        result = original(self)
        if str(self._get_param("ShowCacheNodeInfo", "")).lower() != "true":
            return result
        clusters = result.result["CacheClusters"]
        return PaginatedResult({"CacheClusters": [_ClusterWithNodes(c) for c in clusters]})

    return describe


# --- gaps 3 and 5: replication-group members are clusters, as many as asked for ---------------


def _with_replicas_for_the_members_asked(kwargs: dict[str, Any]) -> dict[str, Any]:
    """moto sizes a group without cluster mode by ReplicasPerNodeGroup only; AWS by
    NumCacheClusters (a primary and NumCacheClusters - 1 replicas) when that is given.
    """
    members = kwargs.get("num_cache_clusters")
    if (
        not members
        or kwargs.get("replicas_per_node_group")
        or kwargs.get("cluster_mode") == "enabled"
        or (kwargs.get("num_node_groups") or 1) > 1
    ):
        return kwargs
    return {**kwargs, "replicas_per_node_group": int(members) - 1}


def _create_replication_group(original: Any) -> Any:
    parameters = inspect.signature(ElastiCacheBackend.create_cache_cluster).parameters

    def create(self: ElastiCacheBackend, **kwargs: Any) -> Any:
        group = original(self, **_with_replicas_for_the_members_asked(kwargs))
        for member in group.member_clusters:
            if member in self.cache_clusters:
                continue
            arguments: dict[str, Any] = {name: None for name in parameters if name != "self"}
            arguments.update(
                cache_cluster_id=member,
                replication_group_id=group.replication_group_id,
                cache_node_type=group.cache_node_type,
                engine=group.engine,
                engine_version=kwargs.get("engine_version"),
                cache_subnet_group_name=kwargs.get("cache_subnet_group_name"),
                security_group_ids=list(kwargs.get("security_group_ids") or []),
                port=group.port,
                log_delivery_configurations=[],
            )
            self.create_cache_cluster(**arguments)
        return group

    return create


# --- gap 4: a rule's description is not part of its identity ---------------------------------


def _without_description(source_group: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in source_group.items() if key != "Description"}


def _rule_equality(original: Any) -> Any:
    def equal(self: SecurityGroupRule, other: SecurityGroupRule) -> bool:
        if not (self.source_group and other.source_group):
            return bool(original(self, other))
        mine = SimpleNamespace(
            **{**vars(self), "source_group": _without_description(self.source_group)}
        )
        theirs = SimpleNamespace(
            **{**vars(other), "source_group": _without_description(other.source_group)}
        )
        return bool(original(mine, theirs))

    return equal


# --- gap 6: a group-referencing rule's description ------------------------------------------


def _rule_description(self: SecurityGroupRule) -> str | None:
    return self.ip_range.get("Description") or (self.source_group or {}).get("Description")


# --- gap 7: a referenced group cannot be deleted ---------------------------------------------


def _refusing_referenced(original: Any) -> Any:
    def delete(self: Any, vpc_id: str | None, group_id: str) -> Any:
        for groups in self.groups.values():
            for group in groups.values():
                if group.id == group_id:
                    continue
                for rule in [*group.ingress_rules, *group.egress_rules]:
                    if (rule.source_group or {}).get("GroupId") == group_id:
                        raise DependencyViolationError(
                            f"resource {group_id} has a dependent object"
                        )
        return original(self, vpc_id, group_id)

    return delete


# --- installing ------------------------------------------------------------------------------


def _add_property(owner: type, name: str, getter: Callable[[Any], Any]) -> None:
    present = owner.__dict__.get(name)
    if isinstance(present, property) and getattr(present.fget, _INSTALLED_MARK, False):
        return
    if present is not None or hasattr(owner, name):
        raise RuntimeError(
            f"moto's {owner.__name__} has its own {name}; retire this part of the emulation"
        )
    setattr(getter, _INSTALLED_MARK, True)
    setattr(owner, name, property(getter))


def _replace_property(owner: type, name: str, getter: Callable[[Any], Any]) -> None:
    present = owner.__dict__.get(name)
    if isinstance(present, property) and getattr(present.fget, _INSTALLED_MARK, False):
        return
    if not isinstance(present, property):
        raise TypeError(f"moto's {owner.__name__}.{name} is no longer a property; revisit")
    setattr(getter, _INSTALLED_MARK, True)
    setattr(owner, name, property(getter))


def _wrap(owner: type, name: str, wrapper_of: Callable[[Any], Any]) -> None:
    present = owner.__dict__.get(name)
    if present is None:
        raise RuntimeError(f"moto's {owner.__name__} no longer defines {name}; revisit this gap")
    if getattr(present, _INSTALLED_MARK, False):
        return
    wrapper = wrapper_of(present)
    setattr(wrapper, _INSTALLED_MARK, True)
    setattr(owner, name, wrapper)


def install() -> None:
    """Fill the gaps above in moto's classes, for the rest of the process.

    Calling it again is harmless. Call it before ``mock_aws()`` starts or a moto server
    serves in this process; moto's resets keep it (it changes classes, not state). Raises
    ``RuntimeError`` if moto has gained its own cluster ``SecurityGroups`` or
    ``ConfigurationEndpoint``, or lost a method this wraps, so the two never mix silently.
    """
    with _LOCK:
        _add_property(CacheCluster, "security_groups", _security_groups)
        _add_property(CacheCluster, "configuration_endpoint", _configuration_endpoint)
        _wrap(ElastiCacheResponse, "describe_cache_clusters", _describe_cache_clusters)
        _wrap(ElastiCacheBackend, "create_replication_group", _create_replication_group)
        _wrap(SecurityGroupRule, "__eq__", _rule_equality)
        _replace_property(SecurityGroupRule, "description", _rule_description)
        _wrap(SecurityGroupBackend, "_delete_security_group", _refusing_referenced)
