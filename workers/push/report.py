"""What a push did (PushReport) and the errors that stop it, each carrying the report so far (PURE)."""
from __future__ import annotations

from dataclasses import dataclass, field


class PushError(Exception):
    """The push could not go on. `report` holds what was done before it stopped."""

    def __init__(self, message: str, report: PushReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class PushUsageError(PushError):
    """Bad arguments: server URL, batch size, unusable state or cache file."""


class PushAuthError(PushError):
    """The server refused the token (401/403)."""


class PushRefusedError(PushError):
    """The server refused a request for good (400 or another final 4xx)."""


class PushUnavailableError(PushError):
    """The server could not be reached or kept failing after the retries."""


@dataclass
class PushReport:
    sent: int = 0  # records the server answered for (accepted or refused one by one)
    skipped_unchanged: int = 0  # unchanged since the server last accepted them
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    requests: int = 0  # HTTP requests made, retries included
    passed_over: list[tuple[str, str]] = field(default_factory=list)  # discovery's notes: not followed, unstat-able

    @property
    def ok(self) -> bool:
        return not self.failed
