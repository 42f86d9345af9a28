"""Reserved concurrency: PutFunctionConcurrency, GetFunctionConcurrency, DeleteFunctionConcurrency.

The registry persists the setting; `Concurrency` (gateway.execution.admission) enforces it on every invoke. A
reservation applies to the whole function (every version and alias); 0 disables the function.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.api.params import check_members
from gateway.app_keys import CONCURRENCY, CONCURRENCY_SETTINGS_LOCK, REGISTRY, SETTINGS
from gateway.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    ResourceNotFoundException,
    ValidationException,
)
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST
from gateway.store.registry import Registry

log = logging.getLogger("gateway.api.functions.concurrency")


def add_routes(app: web.Application) -> None:
    app.router.add_put("/2017-10-31/functions/{FunctionName}/concurrency", put_function_concurrency)
    app.router.add_get("/2019-09-30/functions/{FunctionName}/concurrency", get_function_concurrency)
    app.router.add_delete("/2017-10-31/functions/{FunctionName}/concurrency", delete_function_concurrency)


#: AWS's words for a qualified name (LocalStack's recorded AWS answers)
QUALIFIED = (
    "This operation is permitted on Lambda functions only. Aliases and versions do not support this operation. "
    "Please specify either a function name or an unqualified function ARN."
)


def _function(request: web.Request, latest_arn: bool = False) -> str:
    """The function named; ResourceNotFoundException naming its ARN, qualified with `$LATEST` when `latest_arn`
    (PutFunctionConcurrency's wording on AWS)."""
    ref = parse_function_name(request.match_info["FunctionName"])
    if ref.qualifier is not None:
        raise InvalidParameterValueException(QUALIFIED)
    registry = request.app[REGISTRY]
    if latest_arn and ref.name not in registry:
        raise ResourceNotFoundException(f"Function not found: {request.app[SETTINGS].function_arn(ref.name, LATEST)}")
    registry.get(ref.name)  # ResourceNotFoundException
    return ref.name


async def put_function_concurrency(request: web.Request) -> web.Response:
    """Reserve concurrency: at most that many in flight, carved out of the account's unreserved pool."""
    name = _function(request, latest_arn=True)
    body = await read_json_object(request)
    check_members(body, frozenset({"ReservedConcurrentExecutions"}), "PutFunctionConcurrencyRequest")
    value = body.get("ReservedConcurrentExecutions")
    if value is None:
        raise ValidationException(
            "1 validation error detected: Value null at 'reservedConcurrentExecutions' failed to satisfy "
            "constraint: Member must not be null"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestContentException(
            "Could not parse request body into json: ReservedConcurrentExecutions must be an integer"
        )
    if value < 0:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'reservedConcurrentExecutions' failed to satisfy "
            "constraint: Member must have value greater than or equal to 0"
        )
    concurrency = request.app[CONCURRENCY]
    registry = request.app[REGISTRY]
    async with request.app[CONCURRENCY_SETTINGS_LOCK]:
        concurrency.check_reservation(name, value, provisioned_outside_reservations(registry, skip=name))
        provisioned = sum(p.requested for p in registry.provisioned_configs(name))
        if value < provisioned:
            raise InvalidParameterValueException(
                f"ReservedConcurrentExecutions ({value}) must be at least the function's total provisioned "
                f"concurrency ({provisioned})."
            )
        await asyncio.to_thread(registry.set_reserved_concurrency, name, value)
        concurrency.set_reserved(name, value)
    log.info("function %s: reserved concurrency %d", name, value)
    return json_response({"ReservedConcurrentExecutions": value})


async def get_function_concurrency(request: web.Request) -> web.Response:
    reserved = request.app[REGISTRY].reserved_concurrency(_function(request))
    return json_response({} if reserved is None else {"ReservedConcurrentExecutions": reserved})


async def delete_function_concurrency(request: web.Request) -> web.Response:
    """Remove the reservation; its provisioned concurrency, if any, then comes out of the unreserved pool."""
    name = _function(request)
    registry = request.app[REGISTRY]
    concurrency = request.app[CONCURRENCY]
    async with request.app[CONCURRENCY_SETTINGS_LOCK]:
        if registry.reserved_concurrency(name) is not None:
            unreserved = provisioned_outside_reservations(registry, skip=None) + sum(
                p.requested for p in registry.provisioned_configs(name)
            )
            concurrency.check_floor(name, None, unreserved, "ReservedConcurrentExecutions")
        await asyncio.to_thread(registry.set_reserved_concurrency, name, None)
        concurrency.set_reserved(name, None)
    return web.Response(status=204)


def provisioned_outside_reservations(registry: Registry, skip: str | None) -> int:
    """Provisioned concurrency of functions without a reservation (but `skip`): it uses the unreserved pool."""
    reserved = registry.all_reserved()
    return sum(p.requested for p in registry.provisioned_configs() if p.function not in reserved and p.function != skip)
