"""Concurrency accounting: the account limit, reserved concurrency per function, admission. No I/O.

Lambda's rules: the account has a limit (1000 by default). A function with reserved concurrency R may
have at most R invocations in flight, and R is carved out of the account: functions without a
reservation share `account_limit - sum(reserved)`, which may never be set below `unreserved_min` (100 by
default). R = 0 disables the function. Synchronous invocations are never queued: `admit()` grants a slot or
raises TooManyRequestsException at once, with the reason Lambda gives.

Provisioned concurrency counts against the function's reservation, as on AWS: of R, the P environments the
function's provisioned configs ask for serve only invocations of their version or alias, and everything else —
`$LATEST`, other versions, and the spill-over beyond P — shares the on-demand rest, R - P. So with R = P, an
invocation of `$LATEST` is throttled (ReservedFunctionConcurrentInvocationLimitExceeded), as AWS throttles it.
A slot on provisioned concurrency is counted by the qualifier an invocation names (the config's own, or the
version it provisions): admission runs before the pool picks an environment, and the pool serves provisioned
environments first (gateway.execution.modes), so the two agree but while the environments are still starting.

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
#: a token that starts with this names a provisioned config's slots: WARM + function + ":" + config qualifier
WARM = "\x00"


class Concurrency:
    """In-flight counts against the account limit and the functions' reservations."""

    __slots__ = (
        "_inflight",
        "_provisioned",
        "_reserved",
        "_total_reserved",
        "_warm",
        "account_limit",
        "unreserved_inflight",
        "unreserved_min",
    )

    def __init__(self, account_limit: int = 1000, unreserved_min: int = 100) -> None:
        if account_limit < unreserved_min:
            raise ValueError("the account limit must be at least the unreserved minimum")
        self.account_limit = account_limit
        self.unreserved_min = unreserved_min
        self._reserved: dict[str, int] = {}
        self._total_reserved = 0
        self._inflight: dict[str, int] = {}  # function -> in flight, for functions admitted as reserved
        #: function -> ({invoked qualifier: (config qualifier, environments)}, total provisioned)
        self._provisioned: dict[str, tuple[dict[str, tuple[str, int]], int]] = {}
        self._warm: dict[str, int] = {}  # WARM token -> in flight on that config's provisioned concurrency
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

    def set_provisioned(self, name: str, served: dict[str, tuple[str, int]]) -> None:
        """The function's provisioned concurrency: {qualifier an invocation may name: (the config's qualifier, its
        environments)}; empty for none. Slots in use stay counted until they are released."""
        if served:
            self._provisioned[name] = (dict(served), sum(dict(served.values()).values()))
        else:
            self._provisioned.pop(name, None)

    def provisioned(self, name: str) -> int:
        """The function's total provisioned concurrency, as admission counts it."""
        found = self._provisioned.get(name)
        return 0 if found is None else found[1]

    # -- admission (hot path) ----------------------------------------------------------------------

    def admit(self, name: str, qualifier: str | None = None) -> str:
        """Count one invocation of `name` (of `qualifier`: None for `$LATEST`) in, or raise TooManyRequestsException.
        Returns the release token."""
        limit = self._reserved.get(name)
        if limit is None:
            if self.unreserved_inflight >= self.account_limit - self._total_reserved:
                raise TooManyRequestsException(RATE_EXCEEDED, ACCOUNT_EXCEEDED)
            self.unreserved_inflight += 1
            return UNRESERVED
        provisioned = self._provisioned.get(name)
        if provisioned is not None:
            served, total = provisioned
            slot = served.get(qualifier) if qualifier is not None else None
            if slot is not None:
                token = f"{WARM}{name}:{slot[0]}"
                warm = self._warm.get(token, 0)
                if warm < slot[1]:
                    self._warm[token] = warm + 1
                    return token
            limit -= total  # the reservation less what is provisioned: the on-demand share
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
        counts = self._warm if token[0] == WARM else self._inflight
        left = counts[token] - 1
        if left:
            counts[token] = left
        else:
            del counts[token]

    # -- observation -------------------------------------------------------------------------------

    def inflight(self, name: str | None = None) -> int:
        """In flight for one function admitted against its reservation, or (None) in total."""
        if name is not None:
            warm = f"{WARM}{name}:"
            return self._inflight.get(name, 0) + sum(n for t, n in self._warm.items() if t.startswith(warm))
        return self.unreserved_inflight + sum(self._inflight.values()) + sum(self._warm.values())
