"""Concurrency accounting: the account limit, reserved concurrency per function, admission. No I/O.

Lambda's rules: the account has a limit (1000 by default). A function with reserved concurrency R may
have at most R invocations in flight, and R is carved out of the account: functions without a
reservation share `account_limit - sum(reserved)`, which may never be set below `unreserved_min` (100 by
default). R = 0 disables the function. Synchronous invocations are never queued: `admit()` grants a slot or
raises TooManyRequestsException at once, with the reason Lambda gives.

Concurrency model: used from the event loop thread only; every method is O(1) except the checks that
sum the reservations. `admit()` returns a token that must be handed back to `release()` exactly once.
"""

from __future__ import annotations

from gateway.errors import InvalidParameterValueException, TooManyRequestsException

RATE_EXCEEDED = "Rate Exceeded."
RESERVED_EXCEEDED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_EXCEEDED = "ConcurrentInvocationLimitExceeded"

#: the token of an invocation counted in the shared, unreserved pool
UNRESERVED = ""


class Concurrency:
    """In-flight counts against the account limit and the functions' reservations."""

    __slots__ = ("_inflight", "_reserved", "_total_reserved", "account_limit", "unreserved_inflight", "unreserved_min")

    def __init__(self, account_limit: int = 1000, unreserved_min: int = 100) -> None:
        if account_limit < unreserved_min:
            raise ValueError("the account limit must be at least the unreserved minimum")
        self.account_limit = account_limit
        self.unreserved_min = unreserved_min
        self._reserved: dict[str, int] = {}
        self._total_reserved = 0
        self._inflight: dict[str, int] = {}  # function -> in flight, for functions admitted as reserved
        self.unreserved_inflight = 0

    # -- settings -----------------------------------------------------------------------------------

    @property
    def unreserved_limit(self) -> int:
        """What functions without a reservation share (GetAccountSettings' UnreservedConcurrentExecutions)."""
        return self.account_limit - self._total_reserved

    def reserved(self, name: str) -> int | None:
        return self._reserved.get(name)

    def check_reservation(self, name: str, value: int, unreserved_provisioned: int = 0) -> None:
        """The floor check of PutFunctionConcurrency(`name`, `value`)."""
        self.check_floor(name, value, unreserved_provisioned, "ReservedConcurrentExecutions")

    def check_floor(self, name: str, reserved: int | None, unreserved_provisioned: int, what: str) -> None:
        """Raise Lambda's InvalidParameterValueException unless the unreserved pool stays at its floor.

        The pool is the account limit less every reservation (with `name`'s being `reserved`, None for
        none) less the provisioned concurrency of functions without one (`unreserved_provisioned`). `what`
        names the setting in the message: ReservedConcurrentExecutions or ConcurrentExecutions.
        """
        others = self._total_reserved - self._reserved.get(name, 0)
        if self.account_limit - others - (reserved or 0) - unreserved_provisioned < self.unreserved_min:
            raise InvalidParameterValueException(
                f"Specified {what} for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{self.unreserved_min}]."
            )

    def set_reserved(self, name: str, value: int | None) -> None:
        """Set (or with None, remove) a reservation. Invocations in flight keep the slot they were given."""
        self._total_reserved -= self._reserved.pop(name, 0)
        if value is not None:
            self._reserved[name] = value
            self._total_reserved += value

    # -- admission (hot path) ----------------------------------------------------------------------

    def admit(self, name: str) -> str:
        """Count one invocation of `name` in, or raise TooManyRequestsException. Returns the release token."""
        limit = self._reserved.get(name)
        if limit is None:
            if self.unreserved_inflight >= self.account_limit - self._total_reserved:
                raise TooManyRequestsException(RATE_EXCEEDED, ACCOUNT_EXCEEDED)
            self.unreserved_inflight += 1
            return UNRESERVED
        inflight = self._inflight.get(name, 0)
        if inflight >= limit:
            raise TooManyRequestsException(RATE_EXCEEDED, RESERVED_EXCEEDED)
        self._inflight[name] = inflight + 1
        return name

    def release(self, token: str) -> None:
        """Count an invocation out; `token` is what `admit()` returned."""
        if not token:  # UNRESERVED
            self.unreserved_inflight -= 1
            return
        left = self._inflight[token] - 1
        if left:
            self._inflight[token] = left
        else:
            del self._inflight[token]

    # -- observation -------------------------------------------------------------------------------

    def inflight(self, name: str | None = None) -> int:
        """In flight for one function admitted against its reservation, or (None) in total."""
        if name is not None:
            return self._inflight.get(name, 0)
        return self.unreserved_inflight + sum(self._inflight.values())
