# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    GET_PARAMETERS: _ClassVar[Kind]
    FIT: _ClassVar[Kind]
    EVALUATE: _ClassVar[Kind]
    PHASE: _ClassVar[Kind]
KIND_UNSPECIFIED: Kind
GET_PARAMETERS: Kind
FIT: Kind
EVALUATE: Kind
PHASE: Kind

class Scalar(_message.Message):
    __slots__ = ("bool_value", "int_value", "float_value", "str_value", "bytes_value")
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STR_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    bool_value: bool
    int_value: int
    float_value: float
    str_value: str
    bytes_value: bytes
    def __init__(self, bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., str_value: _Optional[str] = ..., bytes_value: _Optional[bytes] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: Scalar
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...

class ArraySpec(_message.Message):
    __slots__ = ("dtype", "shape")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("message_id", "kind", "arrays", "num_chunks", "values", "num_examples", "loss", "protocol", "phase", "num_parameters")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    kind: Kind
    arrays: _containers.RepeatedCompositeFieldContainer[ArraySpec]
    num_chunks: int
    values: _containers.RepeatedCompositeFieldContainer[Entry]
    num_examples: int
    loss: float
    protocol: str
    phase: str
    num_parameters: int
    def __init__(self, message_id: _Optional[int] = ..., kind: _Optional[_Union[Kind, str]] = ..., arrays: _Optional[_Iterable[_Union[ArraySpec, _Mapping]]] = ..., num_chunks: _Optional[int] = ..., values: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., num_examples: _Optional[int] = ..., loss: _Optional[float] = ..., protocol: _Optional[str] = ..., phase: _Optional[str] = ..., num_parameters: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Greeting(_message.Message):
    __slots__ = ("protocol_version", "node_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class MessageFailure(_message.Message):
    __slots__ = ("message_id", "reason")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    reason: str
    def __init__(self, message_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class UploadGrant(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    def __init__(self, message_id: _Optional[int] = ...) -> None: ...

class Farewell(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("hello", "welcome", "instruction", "result", "chunk", "client_error", "rejection", "refusal", "run_end", "grant")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ERROR_FIELD_NUMBER: _ClassVar[int]
    REJECTION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    RUN_END_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    hello: Greeting
    welcome: Greeting
    instruction: Header
    result: Header
    chunk: Chunk
    client_error: MessageFailure
    rejection: MessageFailure
    refusal: Farewell
    run_end: Farewell
    grant: UploadGrant
    def __init__(self, hello: _Optional[_Union[Greeting, _Mapping]] = ..., welcome: _Optional[_Union[Greeting, _Mapping]] = ..., instruction: _Optional[_Union[Header, _Mapping]] = ..., result: _Optional[_Union[Header, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., client_error: _Optional[_Union[MessageFailure, _Mapping]] = ..., rejection: _Optional[_Union[MessageFailure, _Mapping]] = ..., refusal: _Optional[_Union[Farewell, _Mapping]] = ..., run_end: _Optional[_Union[Farewell, _Mapping]] = ..., grant: _Optional[_Union[UploadGrant, _Mapping]] = ...) -> None: ...
