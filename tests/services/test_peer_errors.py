"""A peer's gRPC failure becomes the caller's domain error, over real gRPC on 127.0.0.1.

The peer is a real gRPC server whose TextEncoder aborts with the status each request names, so
`peer_error` sees exactly what a remote text encoder would send.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from services.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    status_of,
)
from services.text_encoder.client import TextEncoderClient
from teran.tritonserver import free_port
from teran_protos.v1 import text_encoder_pb2 as pb
from teran_protos.v1 import text_encoder_pb2_grpc as pb_grpc


class AbortingTextEncoder(pb_grpc.TextEncoderServicer):
    """Aborts with the status named by the first sentence; "ok" answers with model "other"."""

    def EncodeText(self, request: pb.EncodeTextRequest, context: grpc.ServicerContext) -> object:
        name = request.sentences[0]
        if name == "ok":
            return pb.EncodeTextResponse(model_version="other")
        context.abort(grpc.StatusCode[name], f"sentences[0]: peer says {name}")
        raise AssertionError("context.abort returned")  # it raises; the stubs do not say so


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_TextEncoderServicer_to_server(AbortingTextEncoder(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.mark.parametrize(
    ("code", "error", "names_field"),
    [
        ("INVALID_ARGUMENT", InvalidArgument, True),
        ("RESOURCE_EXHAUSTED", ResourceExhausted, True),
        ("UNAVAILABLE", Unavailable, False),
        ("DEADLINE_EXCEEDED", Unavailable, False),
        ("FAILED_PRECONDITION", FailedPrecondition, False),
        ("PERMISSION_DENIED", Unavailable, False),
        ("UNAUTHENTICATED", Unavailable, False),
        ("UNIMPLEMENTED", ServiceError, False),
    ],
)
def test_peer_status_maps_to_the_callers_error(
    address: str, code: str, error: type[ServiceError], names_field: bool
) -> None:
    client = TextEncoderClient(address, timeout_s=10)
    try:
        with pytest.raises(error) as info:
            client.encode([code], field="query")
    finally:
        client.close()
    assert type(info.value) is error
    message = info.value.message
    if names_field:  # the caller's fault: its own field, the peer's reason
        assert message == f"query: peer says {code}"
    elif code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):  # our deployment's key, not theirs
        assert message.startswith(f"text encoder at {address}: ")
        assert "service_key_file" in message and "peer says" not in message
    else:  # the peer's trouble: named, with what it said
        assert message.startswith(f"text encoder at {address}: ")
        assert f"peer says {code}" in message
    if error is ServiceError:
        assert code in message
        assert status_of(info.value)[0] == grpc.StatusCode.INTERNAL


def test_answer_from_another_model_version_is_refused(address: str) -> None:
    client = TextEncoderClient(address, timeout_s=10)
    try:
        assert client.encode(["ok"]) == []  # no version asked: any answer is taken
        with pytest.raises(FailedPrecondition, match="answered with model other, not v2"):
            client.encode(["ok"], version="v2")
    finally:
        client.close()


def test_unreachable_peer_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    client = TextEncoderClient(address, timeout_s=5)
    try:
        with pytest.raises(Unavailable, match=re.escape(f"text encoder at {address}: ")):
            client.encode(["a dog."])
    finally:
        client.close()
