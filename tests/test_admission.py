"""Concurrency arithmetic: the account limit, reserved concurrency, admission and its throttle reasons."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.errors import InvalidParameterValueException, TooManyRequestsException
from gateway.execution.admission import ACCOUNT_EXCEEDED, RATE_EXCEEDED, RESERVED_EXCEEDED, UNRESERVED, Concurrency


def _throttled(c: Concurrency, name: str) -> TooManyRequestsException:
    with pytest.raises(TooManyRequestsException) as info:
        c.admit(name)
    return info.value


def test_defaults_are_lambdas() -> None:
    c = Concurrency()
    assert (c.account_limit, c.unreserved_min, c.unreserved_limit) == (1000, 100, 1000)
    assert c.inflight() == 0
    assert c.reserved("f") is None


def test_account_limit_below_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="unreserved minimum"):
        Concurrency(account_limit=5, unreserved_min=6)


def test_unreserved_functions_share_the_account_limit() -> None:
    c = Concurrency(account_limit=3, unreserved_min=0)
    tokens = [c.admit("a"), c.admit("b"), c.admit("a")]
    assert tokens == [UNRESERVED] * 3
    assert c.inflight() == 3
    assert c.inflight("a") == 0  # per-function counts are kept for reserved admissions only
    err = _throttled(c, "c")
    assert (err.status, err.name, err.reason) == (429, "TooManyRequestsException", ACCOUNT_EXCEEDED)
    assert err.message == RATE_EXCEEDED
    assert err.to_dict() == {"Type": "User", "message": RATE_EXCEEDED, "Reason": ACCOUNT_EXCEEDED}
    c.release(tokens.pop())
    assert c.admit("c") == UNRESERVED
    for token in [*tokens, UNRESERVED]:
        c.release(token)
    assert c.inflight() == 0


def test_reserved_function_is_capped_and_does_not_spill_into_the_shared_pool() -> None:
    c = Concurrency(account_limit=10, unreserved_min=2)
    c.set_reserved("r", 2)
    assert c.reserved("r") == 2
    assert [c.admit("r"), c.admit("r")] == ["r", "r"]
    assert c.inflight("r") == 2
    assert _throttled(c, "r").reason == RESERVED_EXCEEDED
    # the shared pool still has room, but a reserved function never borrows from it
    assert c.unreserved_inflight == 0
    assert c.admit("other") == UNRESERVED
    c.release("r")
    assert c.admit("r") == "r"


def test_zero_reservation_disables_the_function() -> None:
    c = Concurrency(account_limit=10, unreserved_min=0)
    c.set_reserved("off", 0)
    for _ in range(3):
        assert _throttled(c, "off").reason == RESERVED_EXCEEDED
    assert c.inflight() == 0
    assert c.admit("on") == UNRESERVED


def test_reservations_are_carved_out_of_the_shared_pool() -> None:
    c = Concurrency(account_limit=10, unreserved_min=2)
    c.set_reserved("a", 5)
    c.set_reserved("b", 3)
    assert c.unreserved_limit == 2
    held = [c.admit("x"), c.admit("y")]
    assert _throttled(c, "z").reason == ACCOUNT_EXCEEDED
    c.set_reserved("b", None)  # removing a reservation gives it back
    assert c.unreserved_limit == 5
    held.append(c.admit("b"))
    assert held[-1] == UNRESERVED
    for token in held:
        c.release(token)
    assert c.inflight() == 0


def test_check_reservation_keeps_the_floor() -> None:
    c = Concurrency(account_limit=10, unreserved_min=3)
    c.check_reservation("a", 7)
    c.set_reserved("a", 7)
    c.check_reservation("a", 7)  # its own reservation is not counted twice
    c.check_reservation("a", 0)
    with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[3\]"):
        c.check_reservation("a", 8)
    with pytest.raises(InvalidParameterValueException):
        c.check_reservation("b", 1)
    c.check_reservation("b", 0)


def test_lowered_reservation_keeps_slots_in_flight_and_admits_none_until_below() -> None:
    c = Concurrency(account_limit=10, unreserved_min=0)
    c.set_reserved("f", 3)
    tokens = [c.admit("f") for _ in range(3)]
    c.set_reserved("f", 1)
    assert c.inflight("f") == 3
    assert _throttled(c, "f").reason == RESERVED_EXCEEDED
    c.release(tokens.pop())
    c.release(tokens.pop())
    assert _throttled(c, "f").reason == RESERVED_EXCEEDED  # 1 in flight, limit 1
    c.release(tokens.pop())
    assert c.admit("f") == "f"
    c.release("f")
    assert c.inflight() == 0


def test_tokens_survive_removal_of_the_reservation() -> None:
    c = Concurrency(account_limit=4, unreserved_min=0)
    c.set_reserved("f", 2)
    reserved_token = c.admit("f")
    c.set_reserved("f", None)
    shared_token = c.admit("f")
    assert (reserved_token, shared_token) == ("f", UNRESERVED)
    assert (c.inflight("f"), c.unreserved_inflight, c.inflight()) == (1, 1, 2)
    c.release(reserved_token)
    c.release(shared_token)
    assert (c.inflight("f"), c.unreserved_inflight, c.inflight()) == (0, 0, 0)


# -- provisioned concurrency counts against the reservation (issue 18, cause 6) -------------------------------
# AWS: "provisioned concurrency counts towards a function's reserved concurrency" — a config may not exceed the
# reservation (PutProvisionedConcurrencyConfig's "Requested Provisioned Concurrency should not be greater than the
# reservedConcurrentExecution for function"), and what is provisioned is held for its version or alias: the rest
# of the function (`$LATEST`, other versions, spill-over) has the reservation less what is provisioned.


def test_provisioned_is_taken_out_of_the_reservation_for_everything_else() -> None:
    c = Concurrency(account_limit=10, unreserved_min=0)
    c.set_reserved("f", 3)
    c.set_provisioned("f", {"live": ("live", 2), "1": ("live", 2)})  # alias live -> version 1, 2 environments
    assert c.provisioned("f") == 2
    on_demand = c.admit("f")  # $LATEST: the on-demand share is 3 - 2 = 1
    assert _throttled(c, "f").reason == RESERVED_EXCEEDED
    warm = [c.admit("f", "live"), c.admit("f", "1")]  # the provisioned two, by alias or by version
    assert warm[0] == warm[1] != on_demand
    with pytest.raises(TooManyRequestsException) as info:  # spill-over: the on-demand share is taken
        c.admit("f", "live")
    assert info.value.reason == RESERVED_EXCEEDED
    assert c.inflight("f") == 3 and c.inflight() == 3
    c.release(on_demand)
    spill = c.admit("f", "live")  # the on-demand slot serves the alias's spill-over
    c.release(warm[0])
    again = c.admit("f", "1")  # a provisioned slot is free again
    assert again == warm[0]
    for token in (spill, again, warm[1]):
        c.release(token)
    assert c.inflight("f") == 0 and c.inflight() == 0


def test_reservation_equal_to_provisioned_throttles_latest() -> None:
    """The issue's case: everything reserved is provisioned on a version, so `$LATEST` runs nowhere (AWS throttles
    it), while the version runs."""
    c = Concurrency(account_limit=10, unreserved_min=0)
    c.set_reserved("f", 1)
    c.set_provisioned("f", {"1": ("1", 1)})
    assert _throttled(c, "f").reason == RESERVED_EXCEEDED
    with pytest.raises(TooManyRequestsException):
        c.admit("f", "2")  # another version is on demand as well
    token = c.admit("f", "1")
    c.release(token)
    c.set_provisioned("f", {})  # the config deleted: the whole reservation is on demand again
    c.release(c.admit("f"))


def test_provisioned_without_a_reservation_changes_nothing_in_admission() -> None:
    c = Concurrency(account_limit=2, unreserved_min=0)
    c.set_provisioned("f", {"1": ("1", 1)})
    tokens = [c.admit("f", "1"), c.admit("f")]
    assert tokens == [UNRESERVED, UNRESERVED]
    assert _throttled(c, "f").reason == ACCOUNT_EXCEEDED
    for token in tokens:
        c.release(token)


# -- property: any sequence of set_reserved / admit / release ------------------------------------------------

NAMES = ("a", "b", "c", "d")


@dataclass
class Held:
    name: str
    token: str


class ConcurrencyMachine(RuleBasedStateMachine):
    """Drives a `Concurrency` with arbitrary operations and checks it against a plain model.

    Admission decisions must equal the model's (admit iff below the limit that applies, with the reason
    that applies). In-flight counts stay within their limits; the one exception is by design: changing a
    reservation keeps the invocations in flight, so a count may exceed its new limit (and the total the
    account limit), but only by what was in flight when it changed, and it can only go down until it is
    below the limit again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.c = Concurrency(1, 0)
        self.reserved: dict[str, int] = {}
        self.held: list[Held] = []
        self.reserved_count: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.unreserved_count = 0
        #: the most each pool may hold now: its limit, or more while grandfathered slots drain
        self.ceiling: dict[str, int] = {}
        self.unreserved_ceiling = 0
        self.admits = self.throttles = 0

    @initialize(account=st.integers(1, 12), floor_fraction=st.floats(0, 1))
    def setup(self, account: int, floor_fraction: float) -> None:
        self.c = Concurrency(account, round(account * floor_fraction))
        self.unreserved_ceiling = account

    # -- model ---------------------------------------------------------------------------------------

    @property
    def unreserved_limit(self) -> int:
        return self.c.account_limit - sum(self.reserved.values())

    def _reset_ceilings(self) -> None:
        self.unreserved_ceiling = max(self.unreserved_limit, self.unreserved_count)
        self.ceiling = {n: max(r, self.reserved_count[n]) for n, r in self.reserved.items()}

    # -- rules ---------------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), value=st.integers(0, 14))
    def put_reservation(self, name: str, value: int) -> None:
        others = sum(r for n, r in self.reserved.items() if n != name)
        breaks_floor = self.c.account_limit - others - value < self.c.unreserved_min
        try:
            self.c.check_reservation(name, value)
        except InvalidParameterValueException:
            assert breaks_floor
            return
        assert not breaks_floor
        self.c.set_reserved(name, value)
        self.reserved[name] = value
        self._reset_ceilings()

    @rule(name=st.sampled_from(NAMES))
    def delete_reservation(self, name: str) -> None:
        self.c.set_reserved(name, None)
        self.reserved.pop(name, None)
        self._reset_ceilings()

    @rule(name=st.sampled_from(NAMES))
    def admit(self, name: str) -> None:
        limit = self.reserved.get(name)
        if limit is None:
            expect_ok, reason = self.unreserved_count < self.unreserved_limit, ACCOUNT_EXCEEDED
        else:
            expect_ok, reason = self.reserved_count[name] < limit, RESERVED_EXCEEDED
        try:
            token = self.c.admit(name)
        except TooManyRequestsException as err:
            assert not expect_ok, f"{name} throttled below its limit"
            assert err.reason == reason
            assert err.status == 429
            self.throttles += 1
            return
        assert expect_ok, f"{name} admitted at its limit"
        self.admits += 1
        self.held.append(Held(name, token))
        if limit is None:
            assert token == UNRESERVED
            self.unreserved_count += 1
            assert self.unreserved_count <= self.unreserved_limit
        else:
            assert token == name
            self.reserved_count[name] += 1
            assert self.reserved_count[name] <= limit

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        held = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self._release(held)

    @rule()
    def release_everything(self) -> None:
        while self.held:
            self._release(self.held.pop())
        self._assert_empty()

    def _release(self, held: Held) -> None:
        self.c.release(held.token)
        if held.token == UNRESERVED:
            self.unreserved_count -= 1
            self.unreserved_ceiling = min(self.unreserved_ceiling, max(self.unreserved_limit, self.unreserved_count))
        else:
            self.reserved_count[held.name] -= 1
            if held.name in self.ceiling:
                limit = self.reserved[held.name]
                self.ceiling[held.name] = min(self.ceiling[held.name], max(limit, self.reserved_count[held.name]))

    def _assert_empty(self) -> None:
        assert self.c.inflight() == 0
        assert self.c.unreserved_inflight == 0
        assert all(self.c.inflight(n) == 0 for n in NAMES)

    # -- invariants ------------------------------------------------------------------------------------

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.c.unreserved_inflight == self.unreserved_count
        for name in NAMES:
            assert self.c.inflight(name) == self.reserved_count[name]
            assert self.c.reserved(name) == self.reserved.get(name)
        assert self.c.inflight() == len(self.held)
        assert self.c.unreserved_limit == self.unreserved_limit

    @invariant()
    def the_floor_holds(self) -> None:
        assert self.c.unreserved_limit >= self.c.unreserved_min

    @invariant()
    def inflight_within_limits(self) -> None:
        assert self.unreserved_count <= self.unreserved_ceiling
        for name, limit in self.reserved.items():
            count = self.reserved_count[name]
            assert count <= self.ceiling[name]
            if self.ceiling[name] == limit:  # nothing grandfathered: the plain limit holds
                assert count <= limit
        # slots admitted against a reservation that has since been deleted are grandfathered too
        orphans = any(self.reserved_count[n] for n in NAMES if n not in self.reserved)
        grandfathered = self.unreserved_ceiling > self.unreserved_limit or any(
            self.ceiling[n] > r for n, r in self.reserved.items()
        )
        if not (orphans or grandfathered):
            assert self.c.inflight() <= self.c.account_limit

    def teardown(self) -> None:
        while self.held:
            self._release(self.held.pop())
        self._assert_empty()


ConcurrencyMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestConcurrencyMachine = ConcurrencyMachine.TestCase


def test_the_machine_can_fail() -> None:
    """The model is not vacuous: a Concurrency that ignores reservations breaks it."""

    class Leaky(Concurrency):
        __slots__ = ()

        def admit(self, name: str) -> str:
            if self.reserved(name) is None:
                return super().admit(name)
            self._inflight[name] = self.inflight(name) + 1  # no limit check
            return name

    machine = ConcurrencyMachine()
    machine.setup(account=4, floor_fraction=0.0)
    machine.c = Leaky(4, 0)
    machine.put_reservation("a", 1)
    machine.admit("a")
    with pytest.raises(AssertionError, match="admitted at its limit"):
        machine.admit("a")
