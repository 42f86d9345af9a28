"""Tag routes of the Lambda API (2017-03-31): TagResource, UntagResource, ListTags.

Tags belong to a function, not to a version or alias: the resource is an unqualified function ARN. They
are kept by the registry next to `$LATEST` and never change its RevisionId. A code signing configuration's ARN
names its tags (kept by gateway.store.code_signing; they never change its LastModified). TagResource and UntagResource
change the map through `Registry.update_tags` (atomic read-change-write under the registry's lock, a
blocking SQLite write run in a worker thread), so two concurrent changes cannot lose one another.
`validate_tags` holds Lambda's limits for any operation that takes tags (CreateFunction too).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.app_keys import CODE_SIGNING, REGISTRY, SETTINGS
from gateway.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    ResourceNotFoundException,
    ValidationException,
)

PREFIX = "/2017-03-31/tags"
MAX_TAGS = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
RESERVED_PREFIX = "aws:"

#: the model's TaggableResource pattern, as Lambda quotes it in validation errors
TAGGABLE_PATTERN = (
    r"arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"(function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}|"
    r"event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|"
    r"(capacity-provider|network-connector):[a-zA-Z0-9-_]{1,64})"
)
_TAGGABLE_RE = re.compile(TAGGABLE_PATTERN)
_FUNCTION_RE = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:(?P<name>[a-zA-Z0-9_-]+)"
    r"(?::(?P<qualifier>.+))?"
)
_CSC_RE = re.compile(r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:code-signing-config:csc-[a-z0-9]{17}")
_TAG_PATTERN = r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"


def add_routes(app: web.Application) -> None:
    """Register TagResource, UntagResource and ListTags; `app` must hold SETTINGS and REGISTRY."""
    app.router.add_post(PREFIX + "/{Resource}", tag_resource)
    app.router.add_delete(PREFIX + "/{Resource}", untag_resource)
    app.router.add_get(PREFIX + "/{Resource}", list_tags)


def validate_tags(tags: Mapping[str, str], member: str = "tags") -> None:
    """Lambda's tag rules: at most 50, keys 1..128 characters not starting with `aws:`, values up to 256.

    Raises ValidationException (lengths, as the API's constraint check words it) or
    InvalidParameterValueException (count, reserved prefix).
    """
    _check_count(tags)
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ValidationException(
                f"1 validation error detected: Value '{tags}' at '{member}' failed to satisfy constraint: "
                f"Map keys must satisfy constraint: [Member must have length less than or equal to {MAX_KEY_LENGTH}, "
                f"Member must have length greater than or equal to 1, "
                f"Member must satisfy regular expression pattern: {_TAG_PATTERN}]"
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValidationException(
                f"1 validation error detected: Value '{tags}' at '{member}' failed to satisfy constraint: "
                f"Map value must satisfy constraint: [Member must have length less than or equal to "
                f"{MAX_VALUE_LENGTH}, Member must have length greater than or equal to 0, "
                f"Member must satisfy regular expression pattern: {_TAG_PATTERN}]"
            )
        _check_key_not_reserved(key)


def _check_count(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValueException(
            f"Number of tags exceeds resource tag limit. A resource can have at most {MAX_TAGS} tags."
        )


def _check_key_not_reserved(key: str) -> None:
    if key.lower().startswith(RESERVED_PREFIX):
        raise InvalidParameterValueException("aws: prefixed tag key names are not allowed for external use.")


class Tagged(NamedTuple):
    """A taggable resource of this gateway: its tags now, and how to change them (blocking: in a worker thread)."""

    read: Callable[[], Mapping[str, str]]
    update: Callable[[Callable[[dict[str, str]], dict[str, str]]], object]


def tagged(request: web.Request) -> Tagged:
    """The function or code signing configuration the request's `{Resource}` designates (errors: `function_of`)."""
    resource = request.match_info["Resource"]
    if _CSC_RE.fullmatch(resource) and _TAGGABLE_RE.fullmatch(resource):
        store = request.app[CODE_SIGNING]
        config = store.get(resource)
        if config is None:
            raise ResourceNotFoundException(f"The resource you requested does not exist: {resource}")
        return Tagged(lambda: config.tags, lambda change: store.update_tags(resource, change))
    name = function_of(request)
    registry = request.app[REGISTRY]
    return Tagged(lambda: registry.get(name).tags, lambda change: registry.update_tags(name, change))


def function_of(request: web.Request) -> str:
    """The function name the request's `{Resource}` designates.

    Raises ValidationException for a value that is no taggable resource ARN, InvalidParameterValueException
    for a version or alias ARN, ResourceNotFoundException for a function (or another taggable resource)
    that does not exist here.
    """
    resource = request.match_info["Resource"]
    if not _TAGGABLE_RE.fullmatch(resource):
        raise ValidationException(
            f"1 validation error detected: Value '{resource}' at 'resource' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {TAGGABLE_PATTERN}"
        )
    m = _FUNCTION_RE.fullmatch(resource)
    if m is None:  # a code signing config, event source mapping, ...: none exist in this gateway
        raise ResourceNotFoundException(f"The resource you requested does not exist: {resource}")
    if m["qualifier"] is not None:
        raise InvalidParameterValueException(
            "Tags on function aliases and versions are not supported. Please specify a function ARN."
        )
    settings = request.app[SETTINGS]
    name = m["name"]
    if (m["region"], m["account"]) != (settings.region, settings.account_id) or name not in request.app[REGISTRY]:
        raise ResourceNotFoundException(f"Function not found: {resource}")
    return name


def _tags_member(body: Mapping[str, Any]) -> dict[str, str]:
    unknown = set(body) - {"Tags"}
    if unknown:
        raise InvalidRequestContentException(
            f'Could not parse request body into json: Unrecognized field "{sorted(unknown)[0]}" '
            "(class com.amazonaws.lambda.model.TagResourceRequest), not marked as ignorable"
        )
    tags = body.get("Tags")
    if tags is None:
        raise ValidationException(
            "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null"
        )
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise InvalidRequestContentException(
            "Could not parse request body into json: Cannot deserialize value of type `java.util.Map` "
            f"from {type(tags).__name__} value at 'Tags'"
        )
    return tags


async def tag_resource(request: web.Request) -> web.Response:
    """TagResource: 204. Adds the tags, replacing the values of keys already present."""
    target = tagged(request)
    tags = _tags_member(await read_json_object(request))
    if not tags:  # AWS's answer to an empty tag set (LocalStack's recorded AWS snapshot)
        raise InvalidParameterValueException("An error occurred and the request cannot be processed.")
    validate_tags(tags)

    def merge(current: dict[str, str]) -> dict[str, str]:
        merged = {**current, **tags}
        _check_count(merged)  # the limit is on the function's tags, not on one request's
        return merged

    await asyncio.to_thread(target.update, merge)
    return web.Response(status=204)


async def untag_resource(request: web.Request) -> web.Response:
    """UntagResource: 204. Removes the keys given as `?tagKeys=`; keys the function lacks are ignored."""
    target = tagged(request)
    keys = request.query.getall("tagKeys", [])
    if not keys:
        raise ValidationException(
            "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null"
        )
    for key in keys:
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ValidationException(
                f"1 validation error detected: Value '{keys}' at 'tagKeys' failed to satisfy constraint: "
                f"Member must satisfy constraint: [Member must have length less than or equal to {MAX_KEY_LENGTH}, "
                "Member must have length greater than or equal to 1]"
            )
        _check_key_not_reserved(key)
    await asyncio.to_thread(target.update, lambda current: {k: v for k, v in current.items() if k not in keys})
    return web.Response(status=204)


async def list_tags(request: web.Request) -> web.Response:
    """ListTags: `{"Tags": {...}}` of the function or code signing configuration."""
    return json_response({"Tags": dict(tagged(request).read())})
