"""Assertions about gRPC answers: which fields an ``INVALID_ARGUMENT``
names (the ``google.rpc.BadRequest`` in its status details)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def violations_of(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The field violations of a failed call: field path -> description."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status details"
    out: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def expect_invalid(call: Awaitable[Any], field: str) -> dict[str, str]:
    """Await ``call``, which must fail with ``INVALID_ARGUMENT`` naming
    ``field``; its field violations."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        violations = violations_of(err)
        assert field in violations, violations
        return violations
    raise AssertionError(f"the call succeeded; expected INVALID_ARGUMENT naming {field}")
