"""One error tree for everything the API can answer.

Each class carries its Lambda wire name and HTTP status; only the HTTP layer (`gateway.api.http`)
turns an error into a response: status, header `x-amzn-ErrorType: <name>` and the JSON body that botocore maps
to the named exception. The body is shaped as AWS sends each error (botocore's Lambda model lists each error
shape's members): `{"Type": "User", "Message": ...}` for ResourceNotFoundException, ServiceException and the others
whose shape has `Message`; `{"Type": "User", "message": ...}` for InvalidParameterValueException,
ResourceConflictException, TooManyRequestsException and the others whose shape has `message`; ValidationException
(the AWS front end's, not in Lambda's model) is `{"message": ...}` alone. `message_key` and `typed` say which.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LambdaError(Exception):
    """An error with a fixed Lambda wire name and HTTP status."""

    name: ClassVar[str] = "ServiceException"
    status: ClassVar[int] = 500
    kind: ClassVar[str] = "Service"
    #: the body's key for the message: the member's name in the error shape of botocore's Lambda model
    message_key: ClassVar[str] = "message"
    #: whether the body carries `Type` (every error shape of Lambda's model has it; the front end's errors do not)
    typed: ClassVar[bool] = True

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        if not self.typed:
            return {self.message_key: self.message, **self.extra}
        return {"Type": self.kind, self.message_key: self.message, **self.extra}


class ServiceException(LambdaError):
    name = "ServiceException"
    status = 500
    message_key = "Message"


class InvalidParameterValueException(LambdaError):
    name = "InvalidParameterValueException"
    status = 400
    kind = "User"


class InvalidRequestContentException(LambdaError):
    name = "InvalidRequestContentException"
    status = 400
    kind = "User"


class ValidationException(LambdaError):
    """The AWS front end's validation of a request against the model (not an error shape of Lambda's model): AWS
    sends `{"message": "1 validation error detected: ..."}` with no `Type`."""

    name = "ValidationException"
    status = 400
    kind = "User"
    typed = False


class ResourceNotFoundException(LambdaError):
    name = "ResourceNotFoundException"
    status = 404
    kind = "User"
    message_key = "Message"


class ResourceConflictException(LambdaError):
    name = "ResourceConflictException"
    status = 409
    kind = "User"


class EFSMountFailureException(LambdaError):
    """An environment could not mount its function's file system (gateway/file_systems.py): the access point is no
    longer mapped, or the gateway cannot jail. Invoke's error, 403 in Lambda's model."""

    name = "EFSMountFailureException"
    status = 403
    kind = "User"
    message_key = "Message"


class AccessDeniedException(LambdaError):
    """A signed caller whose credentials do not allow the operation (a function's session credentials: see
    `gateway.api.auth`); the message names the caller, action and resource as AWS's does."""

    name = "AccessDeniedException"
    status = 403
    kind = "User"


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    name = "ProvisionedConcurrencyConfigNotFoundException"
    status = 404
    kind = "User"


class PreconditionFailedException(LambdaError):
    name = "PreconditionFailedException"
    status = 412
    kind = "User"


class PolicyLengthExceededException(LambdaError):
    """A resource policy (of a function or layer version) that would grow past Lambda's 20 KB."""

    name = "PolicyLengthExceededException"
    status = 400
    kind = "User"


class RequestTooLargeException(LambdaError):
    """A request body over the limit. Lambda names it `RequestEntityTooLargeException` on the wire."""

    name = "RequestEntityTooLargeException"
    status = 413
    kind = "User"


class BadRequestException(LambdaError):
    """A request that is not valid HTTP: aiohttp's parser refused it before any route saw it.

    This and the other errors of the HTTP layer below (no Lambda error has these statuses) are named as Lambda names
    its 413: the status's reason phrase, in CamelCase, with `Exception`."""

    name = "BadRequestException"
    status = 400
    kind = "User"


class RequestTimeoutException(LambdaError):
    """A request body that did not arrive within the body timeout; the connection is closed after the answer."""

    name = "RequestTimeoutException"
    status = 408
    kind = "User"


class URITooLongException(LambdaError):
    """A request line (its URL) over the gateway's limit."""

    name = "URITooLongException"
    status = 414
    kind = "User"


class RequestHeaderFieldsTooLargeException(LambdaError):
    """A header field over the gateway's size limit, or more header fields than it accepts."""

    name = "RequestHeaderFieldsTooLargeException"
    status = 431
    kind = "User"


class UnsupportedMediaTypeException(LambdaError):
    name = "UnsupportedMediaTypeException"
    status = 415
    kind = "User"


class TooManyRequestsException(LambdaError):
    """Throttled. `reason` is one of Lambda's ThrottleReason values."""

    name = "TooManyRequestsException"
    status = 429
    kind = "User"

    def __init__(self, message: str, reason: str, retry_after: int | None = None) -> None:
        super().__init__(message, Reason=reason)
        self.reason = reason
        self.retry_after = retry_after


class ServiceUnavailableException(LambdaError):
    """The gateway is at its connection limit; boto3 and the AWS CLI retry a 503 with back-off."""

    name = "ServiceUnavailableException"
    status = 503
    kind = "Service"


class NotImplementedException(LambdaError):
    """An operation of the Lambda API this gateway does not implement (yet). 501 is not retried by boto3."""

    name = "NotImplementedException"
    status = 501
    kind = "Service"


# -- function errors ------------------------------------------------------------------------------------------------
# Not exceptions: the `errorType` of a function error's body (status 200, `X-Amz-Function-Error: Unhandled`). These
# are the ones the gateway itself reports; the runtime reports the function's own (runtimes/python).

#: the function ran past its Timeout, or Init past its 10 seconds: the gateway killed the environment
SANDBOX_TIMEDOUT = "Sandbox.Timedout"
#: the environment's process exited without replying
RUNTIME_EXIT_ERROR = "Runtime.ExitError"
#: the kernel's OOM killer ended the environment (its memory limit is MemorySize)
RUNTIME_OUT_OF_MEMORY = "Runtime.OutOfMemory"
#: Init failed: the runtime reports these when the handler cannot be loaded
INIT_ERROR_TYPES = frozenset(
    {
        "Runtime.ImportModuleError",
        "Runtime.HandlerNotFound",
        "Runtime.UserCodeSyntaxError",
        "Runtime.MalformedHandlerName",
    }
)
#: how an invocation failed, for metrics: the function raised, ran out of time, its process died, it ran out
#: of memory (reported by the isolation layer when it can tell), or Init failed
ERROR_KINDS = ("function", "timeout", "crash", "out_of_memory", "init")
