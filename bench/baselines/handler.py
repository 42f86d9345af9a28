"""The no-op handler every baseline calls: the same code bench/suite.py deploys to the gateway (`return event`)."""

from __future__ import annotations

from typing import Any


def lambda_handler(event: Any, context: Any) -> Any:
    return event
