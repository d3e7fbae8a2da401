"""Scheduled reconciliation: repair the grants that events missed.

The event path reacts; this sweep checks. Each run lists every security group carrying the
tag key (`describe_security_groups` with a `tag-key` filter, page by page), decides each
page with the same pure `decide()` as the event path (VPC caches looked up first, as there),
reads what each destination grants now (once per run, see granted_state.py), and authorizes
only what the policy allows and is missing, through the same idempotent `Granter` the
event path uses. It never revokes.

No principal is known here, so a target that requires one is reported as `needs-event`
and never granted by the sweep (the `principals` rule of `decide()` is the last it checks,
so a denial by that rule means every other rule holds).

A run that is about to run out of time stops between two steps and stores where it stopped
(the token of the first page it has not finished) in the idempotency table under its own
key; the next run resumes there. See docs/reconcile.md for the guarantee and the choices.

The package, along its seams:

- `listing`: one page of tagged groups (EC2 adapter);
- `cursor`: the resume token (DynamoDB adapter);
- `report`: each pair's status and the run's summary;
- `verdicts`: how a pair is judged from what the run has read;
- `sweep`: the run itself, page by page, within its time;
- `accounts`: in a stack that serves member accounts, its own account's sweep and then each
  member's through its read role, each with its own resume token, within the run's time and
  AssumeRole budget (docs/multi-account.md).

Its options are parsed with the other settings (`cache_ingress.settings.ReconcileOptions`)
and it is wired with the event path (`cache_ingress.wiring.build_reconciler`); both are
named here too, as are the parts the entry point and the operator's command use.
"""

from __future__ import annotations

from cache_ingress.reconcile.accounts import AccountsSweep, AccountSweep, OrganizationReport
from cache_ingress.reconcile.cursor import CURSOR_KEY, Cursor, CursorStore, StoredCursor
from cache_ingress.reconcile.listing import GroupPage, tagged_group_page
from cache_ingress.reconcile.report import PairResult, PairStatus, Report
from cache_ingress.reconcile.sweep import (
    Budget,
    Preview,
    ReconcileError,
    Reconciler,
    new_run_id,
)
from cache_ingress.settings import ReconcileOptions
from cache_ingress.wiring import build_accounts_sweep, build_reconciler, current_reconciler

__all__ = [
    "CURSOR_KEY",
    "AccountSweep",
    "AccountsSweep",
    "Budget",
    "Cursor",
    "CursorStore",
    "GroupPage",
    "OrganizationReport",
    "PairResult",
    "PairStatus",
    "Preview",
    "ReconcileError",
    "ReconcileOptions",
    "Reconciler",
    "Report",
    "StoredCursor",
    "build_accounts_sweep",
    "build_reconciler",
    "current_reconciler",
    "new_run_id",
    "tagged_group_page",
]
