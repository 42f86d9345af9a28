"""`Marker` / `MaxItems` paging, shared by the List* operations."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from multidict import MultiMapping

from gateway.errors import InvalidParameterValueException, ValidationException

T = TypeVar("T")


def page_size(query: MultiMapping[str], cap: int = 50, maximum: int = 10000) -> int:
    """`MaxItems` validated as the model says (1..`maximum`: 10000 for most operations), then capped at what one
    page may hold."""
    raw = query.get("MaxItems")
    if raw is None:
        return cap
    if not raw.lstrip("-").isascii() or not raw.lstrip("-").isdigit():
        raise InvalidParameterValueException(f"Invalid value for MaxItems: {raw}")
    value = int(raw)
    if not 1 <= value <= maximum:
        bound = "greater than or equal to 1" if value < 1 else f"less than or equal to {maximum}"
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'maxItems' failed to satisfy "
            f"constraint: Member must have value {bound}"
        )
    return min(value, cap)


def paginate(
    items: Sequence[T],
    query: MultiMapping[str],
    key: Callable[[T], str],
    order: Callable[[str], Any] = str,
    cap: int = 50,
    maximum: int = 10000,
) -> tuple[list[T], dict[str, Any]]:
    """The page after `Marker` and the `NextMarker` part of the answer.

    `items` are sorted by `order(key(item))`; the marker is the key of the last item of the previous page,
    and the page starts after it even if that item has gone since (deleted between two calls).
    """
    size = page_size(query, cap, maximum)
    marker = query.get("Marker")
    start = 0
    if marker:
        try:
            after = order(marker)
        except ValueError:
            raise InvalidParameterValueException(f"Invalid value for Marker: {marker}") from None
        start = bisect.bisect_right([order(key(item)) for item in items], after)
    page = list(items[start : start + size])
    more = start + size < len(items)
    return page, ({"NextMarker": key(page[-1])} if more and page else {})
