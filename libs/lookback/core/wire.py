"""The wire boundary: project errors to and from gRPC status.

Used only by the server bootstrap (:mod:`lookback.core.server`, answering a
:class:`~lookback.core.errors.LookbackError` as a ``google.rpc.Status``
with details, AIP-193) and the client wrappers (:mod:`lookback.core.clients`,
raising a failed call as the error it carried). ``INVALID_ARGUMENT``
carries a ``google.rpc.BadRequest`` with one field violation per bad field;
every status carries an ``ErrorInfo`` with a stable reason.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from lookback.core.errors import Code, FieldViolation, InvalidArgument, LookbackError, error_for

ERROR_DOMAIN = "lookback.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
MAX_VIOLATIONS = 100
"""Field violations sent back at most (a status travels in trailing metadata,
which is small); the message says how many there were."""

_TO_GRPC = {c: grpc.StatusCode[c.name] for c in Code}
_FROM_GRPC = {v: k for k, v in _TO_GRPC.items()}


def grpc_code(code: Code) -> grpc.StatusCode:
    return _TO_GRPC[code]


def to_status(exc: LookbackError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for an error, with details."""
    details: list[any_pb2.Any] = []
    message = exc.message
    if isinstance(exc, InvalidArgument):
        shown = exc.violations[:MAX_VIOLATIONS]
        if len(exc.violations) > len(shown):
            message = f"{message} ({len(exc.violations)} violations, first {len(shown)} listed)"
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in shown
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN))
    details.append(info)
    return status_pb2.Status(code=int(exc.code), message=message, details=details)


def from_status(status: status_pb2.Status) -> LookbackError:
    """The error a ``google.rpc.Status`` describes."""
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    try:
        code = Code(status.code)
    except ValueError:
        code = Code.UNKNOWN
    return error_for(code, status.message, violations)


def from_rpc_error(err: grpc.aio.AioRpcError) -> LookbackError:
    """The error a failed call answered with (code, message, field violations)."""
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code == err.code().value[0]:
                return from_status(status)
    return error_for(_FROM_GRPC.get(err.code(), Code.UNKNOWN), err.details() or "")
