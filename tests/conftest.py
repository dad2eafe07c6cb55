"""Shared fixtures: the real-instrument corpus beside the checkout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.endpoint import LoopbackEndpoint

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """``../shared/corpus``: real files written by third parties. Never copied into the repo."""
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"corpus not found at {CORPUS}; it must sit beside the checkout")
    return CORPUS


@pytest.fixture
def endpoint() -> Iterator[LoopbackEndpoint]:
    """A started loopback HTTP endpoint (see tests/endpoint.py), stopped after the test."""
    server = LoopbackEndpoint().start()
    try:
        yield server
    finally:
        server.stop()
