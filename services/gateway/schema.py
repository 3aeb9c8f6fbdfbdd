"""Pydantic models made from the proto descriptors, so the JSON API is the proto API.

Every request and response message gets a model with the proto's own field names and types
(proto3 JSON: bytes as base64, 64-bit integers accepted as numbers or strings, Struct as an
object). FastAPI checks requests against them and writes the OpenAPI document from them; the
gateway then parses the checked JSON into the proto with `json_format`, so nothing is mapped
by hand and a new proto field appears in the API by itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, create_model

_STRUCTS: dict[str, Any] = {
    "google.protobuf.Struct": dict[str, Any],
    "google.protobuf.Value": Any,
    "google.protobuf.ListValue": list[Any],
}
_UINT32 = Annotated[int, Field(ge=0, le=(1 << 32) - 1)]
_INT32 = Annotated[int, Field(ge=-(1 << 31), le=(1 << 31) - 1)]
_UINT64 = Annotated[int, Field(ge=0, le=(1 << 64) - 1)]
_INT64 = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]
_BYTES = Annotated[str, Field(json_schema_extra={"format": "byte"})]
_SCALARS: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: str,
    FieldDescriptor.TYPE_BOOL: bool,
    FieldDescriptor.TYPE_FLOAT: float,
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_BYTES: _BYTES,
}


class ProtoModel(BaseModel):
    """Unknown fields are refused (a typo is a 400 naming it, not silently ignored)."""

    model_config = ConfigDict(extra="forbid")


_MODELS: dict[str, type[ProtoModel]] = {}


def _annotation(field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        inner: Any = _STRUCTS.get(name) or model_for(field.message_type)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        inner = str
    else:
        inner = _SCALARS[field.type]
    if field.is_repeated:
        return list[inner]
    return inner


def _oneof_note(field: FieldDescriptor) -> str | None:
    group = field.containing_oneof
    if group is None or group.name.startswith("_"):  # proto3 `optional` is a synthetic oneof
        return None
    return f"one of {', '.join(f.name for f in group.fields)} ({group.name})"


def model_for(descriptor: Descriptor) -> type[ProtoModel]:
    """The model of one message (nested messages get theirs, once)."""
    name = descriptor.full_name
    if name in _MODELS:
        return _MODELS[name]
    fields: dict[str, Any] = {}
    for field in descriptor.fields:
        fields[field.name] = (
            _annotation(field) | None,
            Field(None, description=_oneof_note(field)),
        )
    model = create_model(descriptor.name, __base__=ProtoModel, __module__=__name__, **fields)
    model.__doc__ = f"{name} (proto3 JSON, the proto's field names)."
    _MODELS[name] = model
    return model


def to_proto(body: BaseModel | None, message: type[Message]) -> Message:
    """A checked JSON body -> the request message (fields left out keep their defaults)."""
    out = message()
    if body is not None:
        json_format.ParseDict(body.model_dump(exclude_none=True), out)
    return out


def from_proto(message: Message) -> dict[str, Any]:
    """A response message -> proto3 JSON with the proto's field names, defaults included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
