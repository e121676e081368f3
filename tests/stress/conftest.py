"""Shared helpers for the stress tests (short form by default, LITEGATE_STRESS=long for soak)."""

from __future__ import annotations

import os

import pytest


def is_long() -> bool:
    return os.environ.get("LITEGATE_STRESS", "").strip().lower() == "long"


@pytest.fixture
def stress_long() -> bool:
    """True when the long (soak) form was asked for with ``LITEGATE_STRESS=long``."""
    return is_long()
