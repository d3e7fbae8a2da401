"""Revocation: the function's own grants whose reason is gone, taken away again (opt-in).

For a target with `revoke: true`, an open ledger entry of a group is judged on the group as
it is now (`ownership.reason_now`: the same `decide()` that grants, holds included). When its
reason is gone:

- an entry the function does not own (`not-owned`, `unsure`) is reported `not-owned` and the
  grant is left as it is;
- an owned entry's rule is revoked only when no owner's reason remains: the rule's other
  owners are one query (`Ledger.owners`), each judged the same way. If one remains the rule
  stays (`retained`); otherwise it is revoked (`revoked`) and every owner's entry is marked
  revoked, with when, why and by which event.

The revocation of a rule is made at most once per (rule, set of owners), whichever event or
sweep asks first, through a DynamoDB idempotency record as grants are: a duplicate delivery,
or two events revoking the same rule at once, never call AWS twice. A failure is classified
transient (retried) or permanent (dead-lettered) as a grant's is. A VPC rule is revoked by
the id the ledger recorded, so a rule made again by someone else is never touched.

The event path runs this for the groups its event names; the sweep (`docs/reconcile.md`)
for every open entry, and only revokes in enforce mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)

from cache_ingress.errors import AwsCallError
from cache_ingress.grants import FindRule
from cache_ingress.holds import HoldKey
from cache_ingress.models import (
    Decision,
    FailureKind,
    FoundRule,
    Grant,
    Outcome,
    SecurityGroupFacts,
)
from cache_ingress.observability import logger
from cache_ingress.ownership import (
    Entry,
    EntryStatus,
    Judging,
    Ownership,
    Reason,
    reason_now,
    revocable,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.ledger import Ledger
    from cache_ingress.policy import Policy

KEY_PREFIX = "cache-ingress.revoke"
# The groups as they are now, each with the VPC caches its tag names under the policy given
# (the one the entries are judged by).
DescribeGroups = Callable[[Sequence[str], "Policy"], Mapping[str, SecurityGroupFacts]]
# A member account's groups, read through its read role (docs/multi-account.md).
DescribeMemberGroups = Callable[[str, Sequence[str], "Policy"], Mapping[str, SecurityGroupFacts]]
# The AWS revocation of one rule: True if it was revoked now, False if it was gone already.
RevokeRule = Callable[[Grant, str | None], bool]


def _revoke_recorded(
    *, key: dict[str, Any], owners: Sequence[Entry], revoke: Callable[[Sequence[Entry]], str]
) -> dict[str, str]:
    del key  # only the idempotency key: the rule and its owners
    return {"result": revoke(owners)}


class Revoker:
    """Judges open entries and revokes the rules no owner's reason holds any more."""

    def __init__(
        self,
        ledger: Ledger,
        revoke_rule: RevokeRule,
        describe_groups: DescribeGroups,
        persistence: BasePersistenceLayer,
        *,
        expiry_seconds: int,
        account_id: str,
        region: str,
        find_rule: FindRule | None = None,
        description: Callable[[Grant], str] | None = None,
        members: Callable[[str], bool] | None = None,
        describe_member_groups: DescribeMemberGroups | None = None,
    ) -> None:
        """`members` and `describe_member_groups`: in a stack that serves member accounts
        (docs/multi-account.md), which accounts are members, and a member's groups read
        through its read role. A member's entry is judged only on its group read there:
        without the reader, it is reported, never revoked."""
        self._members = members
        self._describe_member = describe_member_groups
        self._ledger = ledger
        self._revoke_rule = revoke_rule
        self._describe = describe_groups
        self._account_id = account_id
        self._region = region
        self._find_rule = find_rule
        self._description = description
        self._config = IdempotencyConfig(
            expires_after_seconds=expiry_seconds, raise_on_no_idempotency_key=True
        )
        self._revoke_once: Callable[..., dict[str, str]] = idempotent_function(
            _revoke_recorded,
            data_keyword_argument="key",
            persistence_store=persistence,
            config=self._config,
            key_prefix=KEY_PREFIX,
        )

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def register(self, context: LambdaContext) -> None:
        self._config.register_lambda_context(context)

    def for_groups(
        self,
        event_id: str,
        group_ids: Sequence[str],
        judging: Judging,
        policy: Policy,
        *,
        dry_run: bool,
    ) -> list[Decision]:
        """The event path: the open entries of the groups the event names."""
        entries = [entry for group_id in group_ids for entry in self._ledger.live(group_id)]
        return self.settle(event_id, entries, judging, policy, dry_run=dry_run)

    def settle(
        self,
        event_id: str,
        entries: Iterable[Entry],
        judging: Judging,
        policy: Policy,
        *,
        dry_run: bool,
    ) -> list[Decision]:
        """Judge each open entry of a revocable target; revoke, retain or report it."""
        candidates = [e for e in entries if e.status in _OPEN and revocable(e, policy)]
        if not candidates:
            return []
        try:
            self._know_groups(judging, candidates, policy)
            self._know_holds(judging, {e.pair for e in candidates})
        except AwsCallError as exc:
            return [_failed(entry, exc) for entry in candidates]
        decisions: list[Decision] = []
        gone_by_rule: dict[str, list[tuple[Entry, Reason]]] = {}
        for entry in candidates:
            reason = self._judge(entry, judging, policy)
            if reason.remains:
                continue
            try:
                settled = self._gone(entry, reason, event_id, dry_run=dry_run)
            except AwsCallError as exc:
                settled = _failed(entry, exc)
            if isinstance(settled, Decision):
                decisions.append(settled)
            else:
                gone_by_rule.setdefault(settled.rule, []).append((settled, reason))
        for rule, gone in gone_by_rule.items():
            decisions += self._settle_rule(rule, gone, event_id, judging, policy, dry_run=dry_run)
        return decisions

    def _gone(self, entry: Entry, reason: Reason, by: str, *, dry_run: bool) -> Entry | Decision:
        """An entry whose reason is gone: owned (returned, for its rule to be settled with its
        other owners), or its decision (not owned, in progress, or not judged)."""
        if not reason.known:
            return _unjudged(entry, reason)
        if entry.status is EntryStatus.PENDING:
            resolved = self._resolve_pending(entry, dry_run=dry_run)
            if isinstance(resolved, Decision):
                return resolved
            entry = resolved
        if entry.status is EntryStatus.IN_FORCE:
            return entry
        return self._not_owned(entry, reason, by, dry_run=dry_run)

    # --- judging ------------------------------------------------------------------------

    def _judge(self, entry: Entry, judging: Judging, policy: Policy) -> Reason:
        if entry.grant.group_id not in judging.groups:
            # A member account's group, with no read role here: never judged gone unread.
            return Reason(
                False,
                f"could not be judged: its group is member account {entry.grant.account}'s, "
                "read only through that account's read role, which this reader has not",
                failure=FailureKind.PERMANENT,
                error_code="MemberNotRead",
            )
        return reason_now(
            entry,
            judging.groups.get(entry.grant.group_id),
            policy,
            judging.holds.found.get(entry.pair),
            account_id=self._account_id,
            region=self._region,
            members=self._members,
        )

    def _know_groups(self, judging: Judging, entries: Sequence[Entry], policy: Policy) -> None:
        """Read the entries' groups not known yet, each in its own account (a member's
        through its read role); a member's group is left unknown without its reader."""
        by_account: dict[str | None, set[str]] = {}
        for entry in entries:
            if entry.grant.group_id not in judging.groups:
                by_account.setdefault(entry.grant.account, set()).add(entry.grant.group_id)
        for account, group_ids in by_account.items():
            missing = sorted(group_ids)
            if account is None or account == self._account_id:
                found = self._describe(missing, policy)
            elif self._describe_member is None:
                continue
            else:
                found = self._describe_member(account, missing, policy)
            judging.groups.update({group_id: found.get(group_id) for group_id in missing})

    def _know_holds(self, judging: Judging, pairs: set[HoldKey]) -> None:
        missing = judging.holds.missing(pairs)
        if missing:
            judging.holds.add(missing, self._ledger.holds_for(missing))

    # --- not owned, pending -------------------------------------------------------------

    def _not_owned(self, entry: Entry, reason: Reason, by: str, *, dry_run: bool) -> Decision:
        why = (
            "a crash hid whether the function made it (a classic grant carries no evidence)"
            if entry.status is EntryStatus.UNSURE
            else "it was there before the function came to it"
        )
        text = f"its reason is gone ({reason.why}), but the function does not own the grant: "
        text += f"{why}; left as it is"
        if not dry_run:
            self._ledger.close(
                entry, entry.status, reason=text, by=by, rule=reason.rule, expected=(entry.status,)
            )
        return entry.decision(Outcome.NOT_OWNED, text, rule=reason.rule)

    def _resolve_pending(self, entry: Entry, *, dry_run: bool) -> Entry | Decision:
        """An entry still `pending`: another execution's grant in progress (retry later), or a
        crashed one, which is resolved now from what AWS holds."""
        if entry.running():
            return entry.decision(
                Outcome.FAILED,
                "a grant of this pair is in progress; its revocation is decided when it ends",
                failure=FailureKind.TRANSIENT,
                error_code="InProgress",
            )
        status, ownership, rule_id, note = (
            EntryStatus.UNSURE,
            None,
            None,
            (
                "an attempt stopped between its call and its entry, and a classic grant carries "
                "no evidence of who made it: never revoked by the function"
            ),
        )
        if entry.grant.is_vpc:
            present = self._present(entry.grant)
            ours = present is not None and present.description == self._describe_rule(entry)
            if ours and present is not None:
                status, ownership, rule_id = EntryStatus.IN_FORCE, Ownership.MADE, present.rule_id
                note = "made by an attempt that stopped before its entry (the description names it)"
            else:
                status, note = EntryStatus.NOT_OWNED, "no rule of this event's is there"
        if not dry_run:
            self._ledger.commit(
                entry.grant, status, note=note, ownership=ownership, rule_id=rule_id
            )
        return replace(entry, status=status, ownership=ownership, rule_id=rule_id)

    # --- one rule -----------------------------------------------------------------------

    def _settle_rule(
        self,
        rule: str,
        gone: list[tuple[Entry, Reason]],
        by: str,
        judging: Judging,
        policy: Policy,
        *,
        dry_run: bool,
    ) -> list[Decision]:
        try:
            other_owners = self._other_owners(
                rule, {entry.key for entry, _ in gone}, judging, policy
            )
        except AwsCallError as exc:
            return [_failed(entry, exc) for entry, _ in gone]
        reasons = [(o, self._judge(o, judging, policy)) for o in other_owners]
        remaining = [(o, r) for o, r in reasons if r.remains]
        if remaining:
            kept_for = remaining[0][0]
            return [
                self._retain(entry, reason, kept_for, by, dry_run=dry_run) for entry, reason in gone
            ]
        unjudged = [(o, r) for o, r in reasons if not r.known]
        if unjudged:
            return [_unjudged(entry, unjudged[0][1]) for entry, _ in gone]
        owners = [*gone, *reasons]
        if dry_run:
            return [
                entry.decision(
                    Outcome.DRY_RUN, f"dry run: would revoke ({reason.why})", rule=reason.rule
                )
                for entry, reason in owners
            ]
        return self._revoke(rule, owners, by)

    def _other_owners(
        self, rule: str, gone: set[str], judging: Judging, policy: Policy
    ) -> list[Entry]:
        """The rule's other owners, their groups and holds read; raises AwsCallError, and
        `InProgress` while another execution's grant of the rule is unresolved."""
        others = [o for o in self._ledger.owners(rule) if o.key not in gone]
        running = next((o for o in others if o.running()), None)
        if running is not None:
            raise AwsCallError(
                f"a grant of the same rule is in progress ({running.key}); the revocation is "
                "decided when it ends",
                code="InProgress",
                transient=True,
            )
        owners = [o for o in others if o.owned]
        self._know_groups(judging, owners, policy)
        self._know_holds(judging, {o.pair for o in owners})
        return owners

    def _retain(
        self, entry: Entry, reason: Reason, kept_for: Entry, by: str, *, dry_run: bool
    ) -> Decision:
        group_id, target = kept_for.pair
        text = (
            f"its reason is gone ({reason.why}); the rule stays, because {group_id} for {target} "
            "still needs it, and is revoked when the last owner's reason goes"
        )
        if not dry_run:
            self._ledger.close(entry, EntryStatus.RETIRED, reason=text, by=by, rule=reason.rule)
        return entry.decision(Outcome.RETAINED, text, rule=reason.rule)

    def _revoke(self, rule: str, owners: list[tuple[Entry, Reason]], by: str) -> list[Decision]:
        entries = [entry for entry, _ in owners]
        # The owners as they stand (an entry written again has a new time), so a rule granted
        # again by the same event is never taken for the one revoked before.
        key = {
            "rule": rule,
            "owners": sorted(f"{entry.key}@{entry.updated_at}" for entry in entries),
        }
        try:
            result = self._revoke_once(key=key, owners=entries, revoke=self._revoke_aws)
        except AwsCallError as exc:
            return [_failed(entry, exc) for entry in entries]
        except IdempotencyAlreadyInProgressError:
            return [
                entry.decision(
                    Outcome.FAILED,
                    "another execution is revoking this rule now; retrying later",
                    failure=FailureKind.TRANSIENT,
                    error_code="InProgress",
                )
                for entry in entries
            ]
        except IdempotencyPersistenceLayerError as exc:
            return [
                entry.decision(
                    Outcome.FAILED,
                    f"the idempotency record could not be written or read: {exc}",
                    failure=FailureKind.TRANSIENT,
                    error_code="IdempotencyStore",
                )
                for entry in entries
            ]
        found_gone = result.get("result") == "gone"
        decisions = []
        for entry, reason in owners:
            text = reason.why
            if found_gone:
                text += (
                    " (the rule was gone already: removed outside the function, or by an "
                    "earlier attempt of this revocation)"
                )
            try:
                closed = self._ledger.close(
                    entry, EntryStatus.REVOKED, reason=text, by=by, rule=reason.rule
                )
            except AwsCallError as exc:
                # Revoked in AWS, not yet marked: the retry finds the revocation recorded
                # and marks the entry then.
                decisions.append(_failed(entry, exc))
                continue
            if not closed:
                logger.warning(
                    "ledger entry changed meanwhile",
                    extra={"rule": rule, "entry": entry.key, "by": by},
                )
            decisions.append(entry.decision(Outcome.REVOKED, text, rule=reason.rule))
        return decisions

    def _revoke_aws(self, owners: Sequence[Entry]) -> str:
        """Inside the idempotent step: the AWS call, once for the rule."""
        first = owners[0]
        rule_id = next((o.rule_id for o in owners if o.rule_id), None)
        if first.grant.is_vpc and rule_id is None:
            present = self._present(first.grant)
            descriptions = {self._describe_rule(o) for o in owners}
            if present is None or present.description not in descriptions:
                return "gone"
            rule_id = present.rule_id
        return "revoked" if self._revoke_rule(first.grant, rule_id) else "gone"

    def _present(self, grant: Grant) -> FoundRule | None:
        return self._find_rule(grant) if self._find_rule is not None else None

    def _describe_rule(self, entry: Entry) -> str | None:
        return self._description(entry.grant) if self._description is not None else None


_OPEN = frozenset(
    {EntryStatus.PENDING, EntryStatus.IN_FORCE, EntryStatus.NOT_OWNED, EntryStatus.UNSURE}
)


def _unjudged(entry: Entry, reason: Reason) -> Decision:
    return entry.decision(
        Outcome.FAILED,
        f"whether its reason remains could not be judged now: {reason.why}",
        failure=reason.failure or FailureKind.TRANSIENT,
        error_code=reason.error_code or "ReasonUnknown",
    )


def _failed(entry: Entry, exc: AwsCallError) -> Decision:
    kind = FailureKind.TRANSIENT if exc.transient else FailureKind.PERMANENT
    return entry.decision(Outcome.FAILED, str(exc), failure=kind, error_code=exc.code)
