from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("model_version", "live", "loaded", "stored", "images", "sentences")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    live: bool
    loaded: bool
    stored: bool
    images: int
    sentences: int
    def __init__(self, model_version: _Optional[str] = ..., live: _Optional[bool] = ..., loaded: _Optional[bool] = ..., stored: _Optional[bool] = ..., images: _Optional[int] = ..., sentences: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("live_version", "versions", "image_sources", "sentence_sources")
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SOURCES_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_SOURCES_FIELD_NUMBER: _ClassVar[int]
    live_version: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    image_sources: int
    sentence_sources: int
    def __init__(self, live_version: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., image_sources: _Optional[int] = ..., sentence_sources: _Optional[int] = ...) -> None: ...

class UpgradeRequest(_message.Message):
    __slots__ = ("model_version", "grace_seconds", "no_switch")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NO_SWITCH_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    grace_seconds: float
    no_switch: bool
    def __init__(self, model_version: _Optional[str] = ..., grace_seconds: _Optional[float] = ..., no_switch: _Optional[bool] = ...) -> None: ...

class UpgradeProgress(_message.Message):
    __slots__ = ("phase", "model_version", "total", "done", "live_version", "skipped", "skipped_examples")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[UpgradeProgress.Phase]
        COPY: _ClassVar[UpgradeProgress.Phase]
        SWITCH: _ClassVar[UpgradeProgress.Phase]
        CATCH_UP: _ClassVar[UpgradeProgress.Phase]
        DONE: _ClassVar[UpgradeProgress.Phase]
    PHASE_UNSPECIFIED: UpgradeProgress.Phase
    COPY: UpgradeProgress.Phase
    SWITCH: UpgradeProgress.Phase
    CATCH_UP: UpgradeProgress.Phase
    DONE: UpgradeProgress.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    phase: UpgradeProgress.Phase
    model_version: str
    total: int
    done: int
    live_version: str
    skipped: int
    skipped_examples: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, phase: _Optional[_Union[UpgradeProgress.Phase, str]] = ..., model_version: _Optional[str] = ..., total: _Optional[int] = ..., done: _Optional[int] = ..., live_version: _Optional[str] = ..., skipped: _Optional[int] = ..., skipped_examples: _Optional[_Iterable[str]] = ...) -> None: ...

class DropVersionRequest(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    def __init__(self, model_version: _Optional[str] = ...) -> None: ...

class DropVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
