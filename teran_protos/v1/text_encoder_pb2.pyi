from teran_protos.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeTextRequest(_message.Message):
    __slots__ = ("sentences", "model_version")
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    sentences: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, sentences: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EncodedSentence(_message.Message):
    __slots__ = ("tokens", "embeddings", "first_word", "word_count")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    FIRST_WORD_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    embeddings: _common_pb2.Matrix
    first_word: int
    word_count: int
    def __init__(self, tokens: _Optional[_Iterable[str]] = ..., embeddings: _Optional[_Union[_common_pb2.Matrix, _Mapping]] = ..., first_word: _Optional[int] = ..., word_count: _Optional[int] = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("sentences", "model_version")
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    sentences: _containers.RepeatedCompositeFieldContainer[EncodedSentence]
    model_version: str
    def __init__(self, sentences: _Optional[_Iterable[_Union[EncodedSentence, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
