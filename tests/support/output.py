"""Reading what the function writes: its log lines and EMF metric documents."""

from __future__ import annotations

import io
import sys

import pytest

from cache_ingress.observability import logger


def capture_function_output(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Everything the Logger and the Metrics flush write from now on, for this test.

    Powertools' log handler holds the stdout it found at import, so both it and
    ``sys.stdout`` (where the EMF documents go) are pointed at one stream.
    """
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    monkeypatch.setattr(sys, "stdout", stream)
    return stream
