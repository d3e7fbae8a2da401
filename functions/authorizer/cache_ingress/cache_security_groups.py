"""ElastiCache adapter: authorize an EC2 security group into a cache security group, and
revoke it."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.errors import AwsCallError
from cache_ingress.models import Grant, Outcome

ALREADY_EXISTS = "AuthorizationAlreadyExists"
NOT_FOUND = "AuthorizationNotFound"
REVOKE_ACTION = "elasticache:RevokeCacheSecurityGroupIngress"
CLASSIC_UNAVAILABLE = "not permitted in this API version"


def authorize(elasticache: Any, grant: Grant) -> Outcome:
    """Authorize the grant's group; AuthorizationAlreadyExists counts as success."""
    try:
        elasticache.authorize_cache_security_group_ingress(
            CacheSecurityGroupName=grant.cache_security_group,
            EC2SecurityGroupName=grant.group_name,
            EC2SecurityGroupOwnerId=grant.owner_id,
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == ALREADY_EXISTS:
            return Outcome.ALREADY_AUTHORIZED
        error = aws_call_error(exc, "elasticache:AuthorizeCacheSecurityGroupIngress")
        if error.code == "InvalidParameterValue" and CLASSIC_UNAVAILABLE in str(exc):
            raise AwsCallError(
                "this account has no EC2-Classic, so cache security groups cannot be used; "
                "describe the cache as a VPC target instead (replication_group, cache_cluster "
                f"or vpc_security_group; see docs/vpc-targets.md) ({error})",
                code="CacheSecurityGroupsUnavailable",
                transient=False,
            ) from exc
        raise error from exc
    except BotoCoreError as exc:
        raise aws_call_error(exc, "elasticache:AuthorizeCacheSecurityGroupIngress") from exc
    return Outcome.AUTHORIZED


def revoke(elasticache: Any, grant: Grant) -> bool:
    """Revoke the grant's pair; False if the cache security group no longer grants it."""
    try:
        elasticache.revoke_cache_security_group_ingress(
            CacheSecurityGroupName=grant.cache_security_group,
            EC2SecurityGroupName=grant.group_name,
            EC2SecurityGroupOwnerId=grant.owner_id,
        )
    except ClientError as exc:
        # The pair, or the whole cache security group, is gone: nothing left to revoke.
        if exc.response.get("Error", {}).get("Code") in (NOT_FOUND, "CacheSecurityGroupNotFound"):
            return False
        raise aws_call_error(exc, REVOKE_ACTION) from exc
    except BotoCoreError as exc:
        raise aws_call_error(exc, REVOKE_ACTION) from exc
    return True
