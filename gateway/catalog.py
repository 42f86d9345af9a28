"""The runtimes this gateway runs, and what runs each: a catalogue built once at start-up.

Lambda's runtime ids come from botocore's model of the Lambda API (its `Runtime` enum), not from a list of ours, so a
runtime AWS adds is at least known by name. Each id the gateway can run resolves to a `RuntimeChoice`:

- `python3.X`: the Python fast path, in a zygote on a Python 3.X (`interpreter`);
- `nodejs<N>.x`: a Node.js `program` of major N (gateway/nodes.py: GATEWAY_RUNTIME_NODEJS<N>_X, else PATH, nvm,
  the system; another major only with GATEWAY_RUNTIME_FALLBACK=1, and then `note` says so) running runtimes/node,
  run by the Runtime API proxy (runtimes/proxy) in a zygote on the gateway's own interpreter;
- `provided.al2023`, `provided.al2`: the function's own `bootstrap`, run by the proxy likewise.

An id it cannot run resolves to `UnsupportedRuntime`, whose message says why (no such interpreter here, deprecated,
not a runtime this gateway implements), for CreateFunction and UpdateFunctionConfiguration to return as a 400.

Which Python runs `python3.X` (`find_pythons`): the interpreter the operator named (GATEWAY_RUNTIME_PYTHON3_X), else
this gateway's own for its own version, else the first `python3.X` of: PATH (a pyenv shim, a bash script that costs
~90 ms per exec, stands for pyenv's versions, looked at next), pyenv's versions ($PYENV_ROOT, ~/.pyenv: the newest
3.X.Y), /usr/bin, /usr/local/bin. Each candidate is run once (`-I -S -c`, in parallel, cached by file identity) to
read its version. None found: the runtime is refused, the message says what to install or set; with
GATEWAY_RUNTIME_FALLBACK=1 it runs on the nearest Python 3 found instead, and its `note` says so. The runtime runs on
Python 3.10 and later (MIN_PYTHON_MINOR).

`Catalog.discover(settings)` builds it; pure apart from that (tests build one from choices).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import gzip
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from gateway.nodes import PROJECT, choose_node
from gateway.pythons import MIN_PYTHON_MINOR, Python, find_pythons, own_python
from gateway.settings import Settings

log = logging.getLogger("gateway.catalog")

#: runtime ids Lambda no longer accepts for new functions (past the "Block function create" date of AWS's runtime
#: deprecation table, as read on 2026-12-07; Lambda's own message names them so). Not yet refused here although Lambda
#: does: LENIENT_RUNTIMES.
DEPRECATED_RUNTIMES = frozenset(
    {
        "nodejs",
        "nodejs4.3",
        "nodejs4.3-edge",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "nodejs18.x",  # deprecated 2025-09-01
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "python3.9",  # deprecated 2025-12-15, creation blocked since 2026-08-31
        "java8",
        "dotnetcore1.0",
        "dotnetcore2.0",
        "dotnetcore2.1",
        "dotnetcore3.1",
        "dotnet6",
        "ruby2.5",
        "ruby2.7",
        "ruby3.2",  # deprecated 2026-03-31
        "provided",
        "go1.x",
    }
)
#: runtime ids past Lambda's "Block function create" date that this gateway still accepts, deliberately, with the
#: date: a host may have only that version (Debian 12's Node.js is 20); the start-up log says so
LENIENT_RUNTIMES = {"nodejs20.x": "2026-08-31"}
#: the custom runtimes: the function brings its `bootstrap`
PROVIDED_RUNTIMES = ("provided.al2023", "provided.al2")


class Kind(enum.Enum):
    """How an environment of the runtime runs its function."""

    PYTHON = "python"  # the Python fast path: the environment process imports the handler
    NODE = "node"  # the Runtime API proxy runs Node.js with runtimes/node
    PROVIDED = "provided"  # the Runtime API proxy runs the function's bootstrap


@dataclasses.dataclass(frozen=True)
class RuntimeChoice:
    """What runs one runtime id: `interpreter` is the Python of its zygote (for the proxy too); `program` the
    Node.js binary (Kind.NODE); `note` says, when set, that a fallback was taken (StateReason and the log say it)."""

    runtime: str
    kind: Kind
    interpreter: str
    program: str | None = None
    note: str | None = None


class UnsupportedRuntime(ValueError):
    """This gateway cannot run the runtime; the message says why, in Lambda's words where Lambda has them."""


#: families whose successor has another name: .NET Core became .NET, Go runs on an OS-only runtime
_SUCCESSOR_FAMILY = {"dotnetcore": "dotnet", "go": "provided"}


def _family(runtime: str) -> str:
    """`python` of `python3.12`: the letters an id starts with."""
    return re.sub(r"[^a-z].*", "", runtime)


def successor(runtime: str) -> str:
    """The runtime AWS recommends instead of a deprecated one ("We recommend you use the new runtime (python3.12)
    ..."): its family's newest id in botocore's model that Lambda still accepts."""
    family = _family(runtime)
    family = _SUCCESSOR_FAMILY.get(family, family)
    candidates = [r for r in lambda_runtimes() if _family(r) == family and r not in DEPRECATED_RUNTIMES]
    if not candidates:
        return "a supported runtime"
    return max(candidates, key=lambda r: tuple(int(n) for n in re.findall(r"\d+", r)))


@functools.cache
def lambda_runtimes() -> tuple[str, ...]:
    """Lambda's runtime ids, in the order of botocore's model of the Lambda API."""
    spec = importlib.util.find_spec("botocore")  # the model ships with botocore (found, not imported: it is slow)
    if spec is None or spec.origin is None:
        raise RuntimeError("botocore is not installed: it holds the Lambda API's model (the runtime ids)")
    model = Path(spec.origin).parent / "data" / "lambda" / "2015-03-31" / "service-2.json.gz"
    with gzip.open(model) as f:
        return tuple(json.load(f)["shapes"]["Runtime"]["enum"])


class Catalog(Mapping[str, RuntimeChoice]):
    """The runtime ids this gateway runs (a read-only mapping id -> RuntimeChoice), and why it runs no others."""

    def __init__(self, choices: Mapping[str, RuntimeChoice], refusals: Mapping[str, str] | None = None) -> None:
        self._choices = dict(choices)
        self._refusals = dict(refusals or {})

    def __getitem__(self, runtime: str) -> RuntimeChoice:
        return self._choices[runtime]

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices)

    def __len__(self) -> int:
        return len(self._choices)

    def resolve(self, runtime: str) -> RuntimeChoice:
        """The choice for `runtime`; raises UnsupportedRuntime with the reason it cannot run here."""
        choice = self._choices.get(runtime)
        if choice is not None:
            return choice
        if runtime in DEPRECATED_RUNTIMES:
            raise UnsupportedRuntime(
                f"The runtime parameter of {runtime} is no longer supported for creating or updating AWS "
                f"Lambda functions. We recommend you use the new runtime ({successor(runtime)}) while creating or "
                "updating functions."
            )
        lambdas = lambda_runtimes()
        if runtime not in lambdas:  # AWS's words (LocalStack's recorded answer): the ids it accepts, model order
            accepted = ", ".join(r for r in lambdas if r not in DEPRECATED_RUNTIMES)
            raise UnsupportedRuntime(
                f"Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: "
                f"[{accepted}] or be a valid ARN"
            )
        reason = self._refusals.get(runtime)
        if reason is None:
            reason = f"The runtime parameter of {runtime} is not supported by this gateway. Supported runtimes: "
            reason += f"{', '.join(sorted(self))}."
            if runtime in lambdas:  # java*, ruby*, dotnet*: Lambda's own runtimes for them are not implemented here
                reason += (
                    " A custom runtime can bring it: create the function with runtime provided.al2023 and a "
                    "`bootstrap` (in its code or a layer) that runs the language's Lambda runtime interface client."
                )
        raise UnsupportedRuntime(reason)

    def refusals(self) -> dict[str, str]:
        """Lambda's runtime ids this host cannot run (not deprecated ones) -> why, as `resolve` says it."""
        return dict(self._refusals)

    def note(self, runtime: str) -> str:
        """What a function's configuration says of its runtime on this host today (StateReason): that a fallback
        stands in, or why it cannot run here now; "" when it runs on its own version. No host paths: API callers
        read it."""
        choice = self._choices.get(runtime)
        if choice is not None:
            return choice.note or ""
        try:
            self.resolve(runtime)
        except UnsupportedRuntime as exc:
            return f"This function cannot run on this gateway now: {exc}"
        return ""

    def by_interpreter(self) -> dict[str, list[str]]:
        """The runtime ids each zygote interpreter serves (one zygote per distinct interpreter)."""
        out: dict[str, list[str]] = {}
        for runtime, choice in self._choices.items():
            out.setdefault(choice.interpreter, []).append(runtime)
        return out

    @classmethod
    def discover(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Catalog:
        """Find what runs each of Lambda's runtimes on this host (`environ`: the process's by default): see the
        module's docstring. Blocking, ~30 ms (the candidate Pythons run in parallel)."""
        environ = os.environ if environ is None else environ
        own = own_python()
        choices: dict[str, RuntimeChoice] = {}
        refusals: dict[str, str] = {}
        pythons = _python_runtimes()
        explicit = {minor: settings.runtimes[rt] for rt, minor in pythons.items() if rt in settings.runtimes}
        wanted = [m for m in pythons.values() if m >= MIN_PYTHON_MINOR or m in explicit]
        found, problems = find_pythons(environ, wanted, explicit)
        for runtime, minor in pythons.items():
            python = found.get(minor)
            if python is not None and python.minor >= MIN_PYTHON_MINOR:
                choices[runtime] = RuntimeChoice(runtime, Kind.PYTHON, python.path)
                continue
            reason = problems.get(minor) or _missing_python(runtime, minor)
            stand_in = _nearest(found, minor) if settings.runtime_fallback else None
            if stand_in is None:
                refusals[runtime] = reason
                continue
            note = (
                f"The runtime {runtime} runs on Python {stand_in.version_text} on this gateway: "
                f"no usable Python 3.{minor} is here, and GATEWAY_RUNTIME_FALLBACK=1 lets another Python 3 stand in. "
                f"Install Python 3.{minor}, or set GATEWAY_RUNTIME_PYTHON3_{minor}=/path/to/python3.{minor}, to run "
                "it on its own version."
            )
            choices[runtime] = RuntimeChoice(runtime, Kind.PYTHON, stand_in.path, note=note)
            log.warning("%s (%s)", note, stand_in.path)
        for runtime in lambda_runtimes():
            if runtime in DEPRECATED_RUNTIMES:
                continue
            if runtime in PROVIDED_RUNTIMES:
                choices[runtime] = RuntimeChoice(runtime, Kind.PROVIDED, own.path)
            elif runtime.startswith("nodejs") and runtime.endswith(".x"):
                private = [str(settings.data_dir), PROJECT]
                node = choose_node(
                    runtime, settings.runtimes.get(runtime), settings.runtime_fallback, environ, private=private
                )
                if isinstance(node, str):
                    refusals[runtime] = node
                    continue
                choices[runtime] = RuntimeChoice(runtime, Kind.NODE, own.path, program=node[0], note=node[1])
                if node[1]:
                    log.warning("%s (%s)", node[1], node[0])
        _log_runtimes(choices, refusals)
        for runtime, blocked in LENIENT_RUNTIMES.items():
            if runtime in choices:
                log.warning(
                    "%s is accepted here although Lambda blocks creating functions on it since %s (deprecated "
                    "runtime): this host's Node.js is that version. Prefer a supported runtime.",
                    runtime,
                    blocked,
                )
        return cls(choices, refusals)


def _log_runtimes(choices: Mapping[str, RuntimeChoice], refusals: Mapping[str, str]) -> None:
    """One start-up line: the runtimes here, by kind, and those that are not (their reasons: /healthz)."""
    kinds = {kind: sorted(c.runtime for c in choices.values() if c.kind is kind) for kind in Kind}
    log.info(
        "runtimes here: Python %s; Node.js %s; custom %s; not here: %s",
        *(", ".join(kinds[kind]) or "none" for kind in (Kind.PYTHON, Kind.NODE, Kind.PROVIDED)),
        ", ".join(sorted(refusals)) or "none",
    )


def _python_runtimes() -> dict[str, int]:
    """Lambda's python3.X runtime ids that are not deprecated -> X."""
    out = {}
    for runtime in lambda_runtimes():
        minor = runtime.removeprefix("python3.")
        if runtime.startswith("python3.") and minor.isdigit() and runtime not in DEPRECATED_RUNTIMES:
            out[runtime] = int(minor)
    return out


def _missing_python(runtime: str, minor: int) -> str:
    """Why `runtime` cannot run here, and what to do about it."""
    if minor < MIN_PYTHON_MINOR:
        return (
            f"The runtime parameter of {runtime} is not supported by this gateway: its runtime needs Python "
            f"3.{MIN_PYTHON_MINOR} or later. Use a newer runtime, or set GATEWAY_RUNTIME_FALLBACK=1 to run it on "
            "another Python 3."
        )
    return (
        f"The runtime parameter of {runtime} needs a Python 3.{minor} on the gateway's host: none was found (on "
        f"PATH, in pyenv's versions, /usr/bin, /usr/local/bin). Install Python 3.{minor}, or name one with "
        f"GATEWAY_RUNTIME_PYTHON3_{minor}=/path/to/python3.{minor} and restart the gateway "
        "(GATEWAY_RUNTIME_FALLBACK=1 runs it on another Python 3 instead)."
    )


def _nearest(found: Mapping[int, Python], minor: int) -> Python | None:
    """The found Python the runtime can run on whose minor is nearest `minor` (a tie: the newer)."""
    usable = [p for p in found.values() if p.minor >= MIN_PYTHON_MINOR]
    return min(usable, key=lambda p: (abs(p.minor - minor), -p.minor), default=None)
