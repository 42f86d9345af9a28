"""TEMPORARY STUB (coordinator's local testing; replaced by helper B's module)."""

from __future__ import annotations

from gateway.events.destinations import DeliveryFailed
from gateway.events.targets import Target
from gateway.settings import Settings


class Delivery:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, target: Target, record: bytes, success: bool) -> None:
        raise DeliveryFailed("stub")

    async def dead_letter(
        self, target: Target, payload: bytes, request_id: str, error_code: str, error_message: str
    ) -> None:
        raise DeliveryFailed("stub")

    async def close(self) -> None:
        pass
