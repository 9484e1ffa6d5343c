"""Domain errors, and the one place that maps them to gRPC status.

Domain code raises the plain exceptions below; it never imports gRPC. The
server bootstrap's interceptor turns them into a ``google.rpc.Status`` with
details (AIP-193): ``INVALID_ARGUMENT`` carries a ``google.rpc.BadRequest``
with one field violation per bad field, every status carries an
``ErrorInfo`` with a stable reason. Clients read them back with
:func:`status_from_rpc_error`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "lookback.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (``install.device.gaid``) and what is wrong."""

    field: str
    description: str


class LookbackError(Exception):
    """Base of every error a service may answer with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(LookbackError):
    """The request is malformed; ``violations`` names each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str = "") -> None:
        self.violations = violations
        fields = ", ".join(v.field for v in violations)
        super().__init__(message or f"invalid request: {fields}")


class NotFound(LookbackError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(LookbackError):
    """The resource to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(LookbackError):
    """The system is not in a state in which the request can run."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(LookbackError):
    """A concurrency conflict (e.g. a version mismatch); retry after re-reading."""

    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class Unavailable(LookbackError):
    """A backend is down; the request was not carried out and may be retried."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


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


def to_status(exc: LookbackError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for a domain error, with details."""
    details: list[any_pb2.Any] = []
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN))
    details.append(info)
    return status_pb2.Status(
        code=getattr(code_pb2, exc.code.name), message=exc.message, details=details
    )


def to_grpc_status(exc: LookbackError) -> grpc.Status:
    """The status object that ``context.abort_with_status`` takes."""
    return rpc_status.to_status(to_status(exc))


@dataclass(frozen=True)
class RemoteError:
    """What a failed call answered, read back from its status details."""

    code: grpc.StatusCode
    message: str
    violations: list[FieldViolation]

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code.name, "message": self.message}
        if self.violations:
            out["field_violations"] = [
                {"field": v.field, "description": v.description} for v in self.violations
            ]
        return out


def status_from_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError) -> RemoteError:
    """Read code, message and field violations from a failed call."""
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    code = err.code()
    details = err.details()
    return RemoteError(code=code, message=details or "", violations=violations)
