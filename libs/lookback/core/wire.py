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
MAX_MESSAGE = 200
MAX_FIELD = 100
MAX_DESCRIPTION = 200
MAX_VIOLATION_BYTES = 2000
"""Bounds (characters, and bytes of all violations together) that keep a
status well under the 8 KiB of metadata a client accepts: messages and
violations may quote the request, and a longer status would reach the
caller as RESOURCE_EXHAUSTED instead of the error it is."""

_TO_GRPC = {c: grpc.StatusCode[c.name] for c in Code}
_FROM_GRPC = {v: k for k, v in _TO_GRPC.items()}


def grpc_code(code: Code) -> grpc.StatusCode:
    return _TO_GRPC[code]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def to_status(exc: LookbackError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for an error, with details (bounded in size)."""
    details: list[any_pb2.Any] = []
    message = _clip(exc.message, MAX_MESSAGE)
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest()
        size = 0
        for v in exc.violations[:MAX_VIOLATIONS]:
            shown = error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.field, MAX_FIELD), description=_clip(v.description, MAX_DESCRIPTION)
            )
            size += shown.ByteSize()
            if bad.field_violations and size > MAX_VIOLATION_BYTES:
                break
            bad.field_violations.append(shown)
        if len(exc.violations) > len(bad.field_violations):
            message = (
                f"{_clip(exc.message, MAX_MESSAGE - 50)} ({len(exc.violations)} violations, "
                f"first {len(bad.field_violations)} listed)"
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
