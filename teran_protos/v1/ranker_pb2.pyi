from google.protobuf import struct_pb2 as _struct_pb2
from teran_protos.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Filter(_message.Message):
    __slots__ = ("must",)
    MUST_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, must: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("key", "equals", "any_of")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    key: str
    equals: _struct_pb2.Value
    any_of: _struct_pb2.ListValue
    def __init__(self, key: _Optional[str] = ..., equals: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., any_of: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "offset", "filter", "explain")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    offset: int
    filter: Filter
    explain: bool
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., offset: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., explain: _Optional[bool] = ...) -> None: ...

class ImageHit(_message.Message):
    __slots__ = ("id", "score", "uri", "payload", "alignment")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    uri: str
    payload: _struct_pb2.Struct
    alignment: _containers.RepeatedCompositeFieldContainer[_common_pb2.WordAlignment]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., uri: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., alignment: _Optional[_Iterable[_Union[_common_pb2.WordAlignment, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "words", "model_version")
    HITS_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[ImageHit]
    words: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, hits: _Optional[_Iterable[_Union[ImageHit, _Mapping]]] = ..., words: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class SearchSentencesRequest(_message.Message):
    __slots__ = ("image", "regions", "image_id", "top_k", "offset", "filter")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    regions: _common_pb2.RegionFeatures
    image_id: str
    top_k: int
    offset: int
    filter: Filter
    def __init__(self, image: _Optional[bytes] = ..., regions: _Optional[_Union[_common_pb2.RegionFeatures, _Mapping]] = ..., image_id: _Optional[str] = ..., top_k: _Optional[int] = ..., offset: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class SearchSimilarImagesRequest(_message.Message):
    __slots__ = ("image", "regions", "image_id", "top_k", "offset", "filter")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    regions: _common_pb2.RegionFeatures
    image_id: str
    top_k: int
    offset: int
    filter: Filter
    def __init__(self, image: _Optional[bytes] = ..., regions: _Optional[_Union[_common_pb2.RegionFeatures, _Mapping]] = ..., image_id: _Optional[str] = ..., top_k: _Optional[int] = ..., offset: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class SentenceHit(_message.Message):
    __slots__ = ("id", "text", "score", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    score: float
    payload: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchSentencesResponse(_message.Message):
    __slots__ = ("hits", "model_version")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SentenceHit]
    model_version: str
    def __init__(self, hits: _Optional[_Iterable[_Union[SentenceHit, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class Sentence(_message.Message):
    __slots__ = ("id", "text", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    payload: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IngestSentencesRequest(_message.Message):
    __slots__ = ("sentences",)
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    sentences: _containers.RepeatedCompositeFieldContainer[Sentence]
    def __init__(self, sentences: _Optional[_Iterable[_Union[Sentence, _Mapping]]] = ...) -> None: ...

class IngestSentencesResponse(_message.Message):
    __slots__ = ("stored", "results")
    STORED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    results: _containers.RepeatedCompositeFieldContainer[SentenceResult]
    def __init__(self, stored: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SentenceResult, _Mapping]]] = ...) -> None: ...

class SentenceResult(_message.Message):
    __slots__ = ("id", "stored", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    stored: bool
    code: int
    message: str
    def __init__(self, id: _Optional[str] = ..., stored: _Optional[bool] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("image_ids", "sentence_ids")
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    sentence_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image_ids: _Optional[_Iterable[str]] = ..., sentence_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "not_found")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("images", "sentences", "model_version", "image_collection", "sentence_collection")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    images: int
    sentences: int
    model_version: str
    image_collection: str
    sentence_collection: str
    def __init__(self, images: _Optional[int] = ..., sentences: _Optional[int] = ..., model_version: _Optional[str] = ..., image_collection: _Optional[str] = ..., sentence_collection: _Optional[str] = ...) -> None: ...

class GetImageRequest(_message.Message):
    __slots__ = ("id", "max_side")
    ID_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    id: str
    max_side: int
    def __init__(self, id: _Optional[str] = ..., max_side: _Optional[int] = ...) -> None: ...

class GetImageResponse(_message.Message):
    __slots__ = ("id", "data", "content_type", "width", "height", "uri", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    content_type: str
    width: int
    height: int
    uri: str
    payload: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., uri: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
