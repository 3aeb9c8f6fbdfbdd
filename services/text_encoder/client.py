"""The TextEncoder service seen through gRPC, with the in-process `TextEncoding` interface."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from services.convert import from_matrix
from services.core.text import EncodedSentence
from services.errors import check_model, peer_error
from services.metrics import timed
from teran_client.channels import ChannelSecurity, open_channel
from teran_protos.v1 import text_encoder_pb2 as pb
from teran_protos.v1 import text_encoder_pb2_grpc as pb_grpc


class TextEncoderClient:
    def __init__(
        self, address: str, timeout_s: float = 30.0, security: ChannelSecurity | None = None
    ) -> None:
        self.channel = open_channel(address, security)
        self.stub = pb_grpc.TextEncoderStub(self.channel)
        self.address = address
        self.peer = f"text encoder at {address}"
        self.timeout_s = timeout_s

    def encode(
        self,
        sentences: Sequence[str],
        field: str = "sentences",
        single: bool = False,
        version: str | None = None,
    ) -> list[EncodedSentence]:
        request = pb.EncodeTextRequest(sentences=list(sentences), model_version=version or "")
        try:
            with timed("text_encoder", "EncodeText"):
                response = self.stub.EncodeText(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise peer_error(err, self.peer, field) from err
        check_model(self.peer, response.model_version, version)
        return [
            EncodedSentence(
                tokens=list(s.tokens),
                embeddings=np.asarray(from_matrix(s.embeddings, "embeddings")),
            )
            for s in response.sentences
        ]

    def close(self) -> None:
        self.channel.close()
