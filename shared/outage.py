"""Logging for background loops that retry against the database: an outage is one line, and the
recovery one more, instead of a line per round per worker."""

from __future__ import annotations

import logging
from typing import Any


class OutageLog:
    def __init__(self, log: logging.Logger, failed: str, recovered: str):
        self.log = log
        self.failed_message = failed
        self.recovered_message = recovered
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.log.warning(self.failed_message, extra={"error": type(exc).__name__})
        self.failing = True

    def succeeded(self, **extra: Any) -> None:
        if self.failing:
            self.log.warning(self.recovered_message, extra=extra)
        self.failing = False
