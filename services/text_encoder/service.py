"""The TextEncoder gRPC service: proto in, `TextEncoding` out."""

from __future__ import annotations

import grpc

from services.convert import to_matrix
from services.core.text import TextEncoding
from services.errors import grpc_errors
from teran_protos.v1 import text_encoder_pb2 as pb
from teran_protos.v1 import text_encoder_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["TextEncoder"].full_name


class TextEncoderServicer(pb_grpc.TextEncoderServicer):
    def __init__(self, encoding: TextEncoding) -> None:
        self.encoding = encoding

    @grpc_errors
    def EncodeText(
        self, request: pb.EncodeTextRequest, context: grpc.ServicerContext
    ) -> pb.EncodeTextResponse:
        version = request.model_version or self.encoding.models.primary
        encoded = self.encoding.encode(list(request.sentences), version=version)
        return pb.EncodeTextResponse(
            sentences=[
                pb.EncodedSentence(
                    tokens=e.tokens,
                    embeddings=to_matrix(e.embeddings),
                    first_word=e.first_word,
                    word_count=e.word_count,
                )
                for e in encoded
            ],
            model_version=version,
        )
