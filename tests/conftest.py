from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: real outputs of the batch systems, kept in the repository (SOURCES.md says where from);
#: SCHEDULERD_FIXTURES points the tests at another copy
FIXTURES = Path(
    os.environ.get("SCHEDULERD_FIXTURES", ROOT / "tests" / "fixtures" / "batch-outputs")
)


@pytest.fixture
def fixtures_dir() -> Path:
    """The real batch-system outputs in tests/fixtures/batch-outputs."""
    if not FIXTURES.is_dir():
        raise RuntimeError(f"batch-output fixtures not found at {FIXTURES}")
    return FIXTURES
