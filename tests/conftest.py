"""Shared test fixtures."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _roost_logs_propagate(caplog: pytest.LogCaptureFixture) -> None:
    """Let caplog see roost's INFO logs in every test."""
    caplog.set_level(logging.INFO, logger="roost")
