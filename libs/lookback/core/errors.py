"""The project's errors, with the project's own codes.

Domain, storage and service code raise the exceptions below; none of it
imports gRPC. Only :mod:`lookback.core.wire` (used by the server bootstrap
and the client wrappers) maps them to and from gRPC status: a service
answers a :class:`LookbackError` as a ``google.rpc.Status`` with details
(AIP-193), and a failed call to another service is raised in the caller as
the same error again, field violations included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Code(IntEnum):
    """Canonical error codes (the numbers of ``google.rpc.Code``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (``install.device.gaid``) and what is wrong."""

    field: str
    description: str


class LookbackError(Exception):
    """Base of every error a service may answer with."""

    code: Code = Code.INTERNAL

    def __init_subclass__(cls, code: Code | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reason(self) -> str:
        """The stable machine-readable reason (``ErrorInfo.reason``)."""
        return self.code.name


class InvalidArgument(LookbackError, code=Code.INVALID_ARGUMENT):
    """The request is malformed; ``violations`` names each bad field."""

    def __init__(self, violations: list[FieldViolation], message: str = "") -> None:
        self.violations = violations
        fields = ", ".join(v.field for v in violations)
        super().__init__(message or f"invalid request: {fields}")


class NotFound(LookbackError, code=Code.NOT_FOUND):
    """The named resource does not exist."""


class AlreadyExists(LookbackError, code=Code.ALREADY_EXISTS):
    """The resource to create exists already."""


class FailedPrecondition(LookbackError, code=Code.FAILED_PRECONDITION):
    """The system is not in a state in which the request can run."""


class Aborted(LookbackError, code=Code.ABORTED):
    """A concurrency conflict (e.g. a version mismatch); retry after re-reading."""


class Unavailable(LookbackError, code=Code.UNAVAILABLE):
    """A backend is down; the request was not carried out and may be retried."""


class Unauthenticated(LookbackError, code=Code.UNAUTHENTICATED):
    """No key, or a key that is not (or no longer) valid."""


class PermissionDenied(LookbackError, code=Code.PERMISSION_DENIED):
    """A valid key used for another app or beyond its scope."""


class ResourceExhausted(LookbackError, code=Code.RESOURCE_EXHAUSTED):
    """Over a rate limit; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_BY_CODE: dict[Code, type[LookbackError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
    )
}


def error_for(
    code: Code, message: str, violations: list[FieldViolation] | None = None
) -> LookbackError:
    """The error of the class that ``code`` stands for (read back from another service)."""
    if code is Code.INVALID_ARGUMENT:
        return InvalidArgument(violations or [], message)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    err = LookbackError(message)
    err.code = code
    return err


@dataclass
class Violations:
    """Collects field violations while validating a request."""

    prefix: str = ""
    items: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(f"{self.prefix}{path}", description))

    def require(self, value: object, path: str, what: str = "is required") -> None:
        if not value:
            self.add(path, what)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(list(self.items))
