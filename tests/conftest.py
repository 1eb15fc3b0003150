from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(
    os.environ.get("SCHEDULERD_FIXTURES", ROOT.parent / "shared" / "fixtures" / "batch-outputs")
)


@pytest.fixture
def fixtures_dir() -> Path:
    """The real batch-system outputs in shared/fixtures/batch-outputs."""
    if not FIXTURES.is_dir():
        raise RuntimeError(f"batch-output fixtures not found at {FIXTURES}")
    return FIXTURES
