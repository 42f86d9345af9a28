"""The runtimes this gateway runs, and what runs each: a catalogue built once at start-up.

Lambda's runtime ids come from botocore's model of the Lambda API (its `Runtime` enum), not from a list of ours, so a
runtime AWS adds is at least known by name. Each id the gateway can run resolves to a `RuntimeChoice`:

- `python3.X`: the Python fast path, in a zygote on a Python 3.X (`interpreter`);
- `nodejs<N>.x`: a Node.js `program` of major N, run by the Runtime API proxy (runtimes/proxy) in a zygote on the
  gateway's own interpreter;
- `provided.al2023`, `provided.al2`: the function's own `bootstrap`, run by the proxy likewise.

An id it cannot run resolves to `UnsupportedRuntime`, whose message says why (no such interpreter here, deprecated,
not a runtime this gateway implements), for CreateFunction and UpdateFunctionConfiguration to return as a 400.

`Catalog.discover(settings)` builds it; pure apart from that (tests build one from choices).
"""

from __future__ import annotations

import enum
import functools
import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import Settings

#: runtime ids Lambda no longer accepts for new or updated functions (Lambda's own message names them so)
DEPRECATED_RUNTIMES = frozenset(
    {
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "nodejs",
        "nodejs4.3",
        "nodejs4.3-edge",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "provided",
        "go1.x",
    }
)
#: the custom runtimes: the function brings its `bootstrap`
PROVIDED_RUNTIMES = ("provided.al2023", "provided.al2")


class Kind(enum.Enum):
    """How an environment of the runtime runs its function."""

    PYTHON = "python"  # the Python fast path: the environment process imports the handler
    NODE = "node"  # the Runtime API proxy runs Node.js with runtimes/node
    PROVIDED = "provided"  # the Runtime API proxy runs the function's bootstrap


@dataclass(frozen=True)
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
                "Lambda functions. We recommend you use a supported runtime while creating or updating functions."
            )
        reason = self._refusals.get(runtime)
        if reason is None:
            lambdas = lambda_runtimes()
            known = "is not supported by this gateway" if runtime in lambdas else "is not a Lambda runtime"
            reason = f"The runtime parameter of {runtime} {known}. Supported runtimes: {', '.join(sorted(self))}."
        raise UnsupportedRuntime(reason)

    def by_interpreter(self) -> dict[str, list[str]]:
        """The runtime ids each zygote interpreter serves (one zygote per distinct interpreter)."""
        out: dict[str, list[str]] = {}
        for runtime, choice in self._choices.items():
            out.setdefault(choice.interpreter, []).append(runtime)
        return out

    @classmethod
    def discover(cls, settings: Settings) -> Catalog:
        """Find what runs each of Lambda's runtimes on this host (and `settings.runtimes`' explicit mappings)."""
        choices: dict[str, RuntimeChoice] = {}
        refusals: dict[str, str] = {}
        for runtime in lambda_runtimes():
            if runtime in DEPRECATED_RUNTIMES:
                continue
            if runtime.startswith("python3."):
                interpreter = settings.runtimes.get(runtime)
                if interpreter is not None:
                    choices[runtime] = RuntimeChoice(runtime, Kind.PYTHON, interpreter)
            elif runtime in PROVIDED_RUNTIMES:
                choices[runtime] = RuntimeChoice(runtime, Kind.PROVIDED, sys.executable)
            elif runtime.startswith("nodejs") and runtime.endswith(".x"):
                node = _node_of_major(int(runtime[len("nodejs") : -len(".x")]))
                if node is not None:
                    choices[runtime] = RuntimeChoice(runtime, Kind.NODE, sys.executable, program=node)
                else:
                    refusals[runtime] = f"The runtime parameter of {runtime} needs a Node.js {runtime[6:-2]} here."
        return cls(choices, refusals)


def _node_of_major(major: int) -> str | None:
    """A `node` on PATH whose major version is `major`, or None."""
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return node if out.strip().lstrip("v").split(".")[0] == str(major) else None
