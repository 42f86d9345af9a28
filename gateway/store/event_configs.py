"""TEMPORARY STUB (coordinator's local testing; replaced by helper A's module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class EventInvokeConfig:
    function: str
    qualifier: str
    maximum_retry_attempts: int = 2
    maximum_event_age: int = 21600
    on_success: str | None = None
    on_failure: str | None = None
    last_modified: float = 0.0


class EventInvokeConfigs:
    def __init__(self, db_path: Path, settings: Settings) -> None:
        self.overrides: dict[tuple[str, str], EventInvokeConfig] = {}

    def effective(self, function: str, qualifier: str | None) -> EventInvokeConfig:
        q = qualifier or "$LATEST"
        return self.overrides.get((function, q)) or EventInvokeConfig(function, q)

    def forget(self, function: str, qualifier: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass
