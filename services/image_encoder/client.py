"""The ImageEncoder service's EncodeImage seen through gRPC, for a ranker running alone."""

from __future__ import annotations

import grpc
import numpy as np

from services.convert import from_image_query, from_matrix
from services.core.images import EncodedImage, ImageQuery
from services.errors import check_model, peer_error
from services.metrics import timed
from teran_client.channels import ChannelSecurity, open_channel
from teran_protos.v1 import image_encoder_pb2 as pb
from teran_protos.v1 import image_encoder_pb2_grpc as pb_grpc


class ImageEncoderClient:
    def __init__(
        self, address: str, timeout_s: float = 30.0, security: ChannelSecurity | None = None
    ) -> None:
        self.channel = open_channel(address, security)
        self.stub = pb_grpc.ImageEncoderStub(self.channel)
        self.address = address
        self.peer = f"image encoder at {address}"
        self.timeout_s = timeout_s

    def encode_query(
        self, query: ImageQuery, field: str, version: str | None = None
    ) -> EncodedImage:
        request = pb.EncodeImageRequest(**from_image_query(query), model_version=version or "")
        try:
            with timed("image_encoder", "EncodeImage"):
                response = self.stub.EncodeImage(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise peer_error(err, self.peer, field) from err
        check_model(self.peer, response.model_version, version)
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in response.boxes], dtype=np.float32)
        return EncodedImage(
            regions=from_matrix(response.regions, "regions"),
            boxes=boxes.reshape(-1, 4),
            global_vector=from_matrix(getattr(response, "global"), "global")[0],
        )

    def close(self) -> None:
        self.channel.close()
