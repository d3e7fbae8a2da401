"""`cache-ingress reconcile` against the embedded AWS over HTTP, as an operator runs it.

A module of its own: the embedded AWS must not run while the in-process moto world of the
other command tests is active (they would share moto's state).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_ingress_tools.cli import main
from cache_ingress_tools.emulator.scenario import load_scenario
from cache_ingress_tools.emulator.server import EmbeddedAws
from tests.reconcile import classic_files, granted_pairs

pytestmark = pytest.mark.cli

ORDERS = "orders-cache-sg"


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EmbeddedAws]:
    for name in ("ACCOUNT_ID", "IDEMPOTENCY_TABLE", "DEAD_LETTER_QUEUE_URL", "POLICY_FILE"):
        monkeypatch.delenv(name, raising=False)
    scenario, _ = classic_files(tmp_path)
    with EmbeddedAws(load_scenario(scenario), port=0) as running:
        yield running


def test_against_the_embedded_aws_over_http_with_the_account_from_sts(
    embedded: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    table = embedded.world.scenario.idempotency_table

    status = main(
        [
            "reconcile",
            "--json",
            "--endpoint-url",
            embedded.endpoint_url,
            "--region",
            embedded.scenario.region,
            "--idempotency-table",
            table,
            "--ledger-table",
            str(embedded.world.scenario.ledger_table),
            "--page-size",
            "5",
            "--policy-file",
            str(tmp_path / "classic-policy.yaml"),
        ]
    )

    report = json.loads(capsys.readouterr().out)
    assert status == 1  # inventory-cache-sg does not exist in the scenario
    assert (report["pages"], report["groupsSeen"], report["counts"]["repaired"]) == (1, 5, 2)
    assert granted_pairs(embedded.client("elasticache"), ORDERS) == {
        ("orders-app", embedded.scenario.account_id),
        ("reporting-app", embedded.scenario.account_id),
    }
