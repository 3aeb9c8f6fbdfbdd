from google.protobuf import struct_pb2 as _struct_pb2
from teran_protos.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestItem(_message.Message):
    __slots__ = ("id", "image", "regions", "uri", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    regions: _common_pb2.RegionFeatures
    uri: str
    payload: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., regions: _Optional[_Union[_common_pb2.RegionFeatures, _Mapping]] = ..., uri: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("id", "stored", "code", "message", "regions")
    ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    stored: bool
    code: int
    message: str
    regions: int
    def __init__(self, id: _Optional[str] = ..., stored: _Optional[bool] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., regions: _Optional[int] = ...) -> None: ...

class EncodeImageRequest(_message.Message):
    __slots__ = ("image", "regions", "model_version")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    regions: _common_pb2.RegionFeatures
    model_version: str
    def __init__(self, image: _Optional[bytes] = ..., regions: _Optional[_Union[_common_pb2.RegionFeatures, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EncodeImageResponse(_message.Message):
    __slots__ = ("regions", "boxes", "model_version")
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    regions: _common_pb2.Matrix
    boxes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Box]
    model_version: str
    def __init__(self, regions: _Optional[_Union[_common_pb2.Matrix, _Mapping]] = ..., boxes: _Optional[_Iterable[_Union[_common_pb2.Box, _Mapping]]] = ..., model_version: _Optional[str] = ..., **kwargs) -> None: ...
