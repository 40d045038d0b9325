"""The eight messages of a secure-aggregation round, as plain data for any transport.

Every message is a frozen dataclass with `to_wire()` -> (arrays, values) and `from_wire(arrays,
values)`, where arrays is a list of int/uint NumPy arrays and values a dict of str -> bool | int |
float | str | bytes: exactly what roost's wire carries. `from_wire` checks everything (array count,
dtypes, shapes, value keys and types) and each message checks its own consistency on construction,
so a malformed message raises `MessageFormatError` before any protocol logic sees it.

Node ids are the 1-based ids the server gives the cohort's clients for this round.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple, Self, dataclass_transform, get_type_hints

import numpy as np

from roost.core.types import Scalar
from roost.secagg.crypto import (
    COMMITMENT_BYTES,
    CONFIRMATION_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
)
from roost.secagg.errors import MessageFormatError
from roost.secagg.shamir import SHARE_VALUE_BYTES

WireMessage = tuple[list[np.ndarray], dict[str, Scalar]]

KIND_KEY = "secagg.message"
# A share plaintext holds the two share values (of the masking key and of the self-mask seed)
# and the sender's confirmation of the pairwise mask seed it agreed with the receiver.
SHARE_PLAINTEXT_BYTES = 2 * SHARE_VALUE_BYTES + CONFIRMATION_BYTES
CIPHERTEXT_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + TAG_BYTES
_ID_DTYPE = np.dtype(np.int64)
_BYTE_DTYPE = np.dtype(np.uint8)


class _WireArray(NamedTuple):
    """How an array field travels: its dtype (or the dtypes allowed) and the width of its second
    dimension (None for a 1-D array)."""

    dtype: np.dtype | tuple[np.dtype, ...]
    width: int | None


def _array(dtype: np.dtype | tuple[np.dtype, ...], width: int | None = None) -> Any:
    """Declare a message field that travels as an array (every other field is a value)."""
    return dataclasses.field(metadata={"wire": _WireArray(dtype, width)})


@dataclass_transform(frozen_default=True, eq_default=False, field_specifiers=(_array,))
class _Message:
    """Shared wire conversion. A subclass names its kind, `class X(_Message, kind="..."):`, and
    declares its fields: arrays with `_array(...)`, first, then the scalar values; it becomes a
    frozen dataclass whose wire layout is read from those fields."""

    KIND: ClassVar[str]
    ARRAYS: ClassVar[tuple[tuple[str, np.dtype | tuple[np.dtype, ...], int | None], ...]]
    VALUES: ClassVar[tuple[tuple[str, type], ...]]

    def __init_subclass__(cls, *, kind: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, eq=False)(cls)
        cls.KIND = kind
        types = get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        cls.ARRAYS = tuple((f.name, *f.metadata["wire"]) for f in fields if "wire" in f.metadata)
        cls.VALUES = tuple((f.name, types[f.name]) for f in fields if "wire" not in f.metadata)

    def to_wire(self) -> WireMessage:
        """(arrays, values) in the order `from_wire` expects."""
        arrays = [np.ascontiguousarray(getattr(self, name)) for name, _, _ in self.ARRAYS]
        values: dict[str, Scalar] = {KIND_KEY: self.KIND}
        values.update({name: getattr(self, name) for name, _ in self.VALUES})
        return arrays, values

    @classmethod
    def from_wire(cls, arrays: object, values: object) -> Self:
        """Parse and validate a message; `MessageFormatError` says what is wrong."""
        if not isinstance(values, dict) or values.get(KIND_KEY) != cls.KIND:
            found = values.get(KIND_KEY) if isinstance(values, dict) else type(values).__name__
            raise MessageFormatError(f"expected a {cls.KIND!r} message, got {found!r}")
        if not isinstance(arrays, list | tuple) or len(arrays) != len(cls.ARRAYS):
            count = len(arrays) if isinstance(arrays, list | tuple) else type(arrays).__name__
            raise MessageFormatError(f"{cls.KIND} carries {len(cls.ARRAYS)} arrays, got {count}")
        expected_keys = {KIND_KEY} | {name for name, _ in cls.VALUES}
        if set(values) != expected_keys:
            raise MessageFormatError(
                f"{cls.KIND} carries values {sorted(expected_keys)}, got {sorted(values)}"
            )
        fields: dict[str, object] = {}
        for array, (name, dtype, width) in zip(arrays, cls.ARRAYS, strict=True):
            fields[name] = _check_array(cls.KIND, name, array, dtype, width)
        for name, kind in cls.VALUES:
            fields[name] = _check_value(cls.KIND, name, values[name], kind)
        return cls(**fields)

    def __post_init__(self) -> None:
        # Node-id arrays (int64) hold distinct positive ids, no id in two of them; each 2-D array
        # has one row per id of the id array declared before it.
        seen: set[int] = set()
        ids_name, ids = "", np.zeros(0, dtype=_ID_DTYPE)
        for name, dtype, width in self.ARRAYS:
            array = _check_array(self.KIND, name, getattr(self, name), dtype, width)
            if dtype == _ID_DTYPE:
                nodes = {int(node) for node in array}
                if (nodes and min(nodes) < 1) or len(nodes) != array.size or nodes & seen:
                    raise MessageFormatError(
                        f"{self.KIND}: {name} must be distinct positive node ids, none of them "
                        "in another id list of the message"
                    )
                seen |= nodes
                ids_name, ids = name, array
            elif width is not None and len(array) != len(ids):
                raise MessageFormatError(
                    f"{self.KIND}: {name} needs one row per entry of {ids_name} "
                    f"({len(ids)}), got {len(array)}"
                )
        for name, kind in self.VALUES:
            _check_value(self.KIND, name, getattr(self, name), kind)
        self.check()

    def check(self) -> None:
        """Consistency between fields; subclasses override."""


class AdvertiseKeysIns(_Message, kind="secagg.advertise_keys.ins"):
    """Phase 1, server -> client: your node id and the round's settings; advertise two keys."""

    server_round: int
    node_id: int
    vector_length: int
    bits: int
    threshold: int

    def check(self) -> None:
        if self.node_id < 1 or self.vector_length < 1 or not 2 <= self.bits <= 64:
            raise MessageFormatError(
                f"{self.KIND}: node_id and vector_length must be >= 1 and bits in [2, 64]"
            )
        if self.threshold < 2:
            raise MessageFormatError(f"{self.KIND}: threshold must be >= 2")


class AdvertiseKeysRes(_Message, kind="secagg.advertise_keys.res"):
    """Phase 1, client -> server: raw X25519 public keys for share encryption and masking."""

    encryption_key: bytes
    masking_key: bytes

    def check(self) -> None:
        for name in ("encryption_key", "masking_key"):
            if len(getattr(self, name)) != KEY_BYTES:
                raise MessageFormatError(f"{self.KIND}: {name} must have {KEY_BYTES} bytes")
        if self.encryption_key == self.masking_key:
            raise MessageFormatError(f"{self.KIND}: the two public keys must differ")


class ShareKeysIns(_Message, kind="secagg.share_keys.ins"):
    """Phase 2, server -> client: your live neighbours and their public keys; share your secrets."""

    neighbour_ids: np.ndarray = _array(_ID_DTYPE)
    encryption_keys: np.ndarray = _array(_BYTE_DTYPE, KEY_BYTES)
    masking_keys: np.ndarray = _array(_BYTE_DTYPE, KEY_BYTES)
    server_round: int


class ShareKeysRes(_Message, kind="secagg.share_keys.res"):
    """Phase 2, client -> server: one encrypted share pair per neighbour, and a seed commitment."""

    receiver_ids: np.ndarray = _array(_ID_DTYPE)
    ciphertexts: np.ndarray = _array(_BYTE_DTYPE, CIPHERTEXT_BYTES)
    seed_commitment: bytes

    def check(self) -> None:
        if len(self.seed_commitment) != COMMITMENT_BYTES:
            raise MessageFormatError(
                f"{self.KIND}: seed_commitment must have {COMMITMENT_BYTES} bytes"
            )


class MaskedInputIns(_Message, kind="secagg.masked_input.ins"):
    """Phase 3, server -> client: the shares others sent you; send your masked input."""

    sender_ids: np.ndarray = _array(_ID_DTYPE)
    ciphertexts: np.ndarray = _array(_BYTE_DTYPE, CIPHERTEXT_BYTES)
    server_round: int


class MaskedInputRes(_Message, kind="secagg.masked_input.res"):
    """Phase 3, client -> server: y = input + masks mod 2^bits, and the senders it rejected.

    A sender is rejected when its encrypted shares fail authentication or its key confirmation
    does not match; the client holds no shares of a rejected sender and did not mask with it.
    """

    masked_input: np.ndarray = _array((np.dtype(np.uint32), np.dtype(np.uint64)))
    rejected_senders: np.ndarray = _array(_ID_DTYPE)


class UnmaskIns(_Message, kind="secagg.unmask.ins"):
    """Phase 4, server -> client: reveal seed shares of these survivors, key shares of these."""

    survivor_ids: np.ndarray = _array(_ID_DTYPE)
    dropped_ids: np.ndarray = _array(_ID_DTYPE)
    server_round: int
    num_survivors: int


class UnmaskRes(_Message, kind="secagg.unmask.res"):
    """Phase 4, client -> server: the requested share values, one row per owner."""

    seed_share_owners: np.ndarray = _array(_ID_DTYPE)
    seed_shares: np.ndarray = _array(_BYTE_DTYPE, SHARE_VALUE_BYTES)
    key_share_owners: np.ndarray = _array(_ID_DTYPE)
    key_shares: np.ndarray = _array(_BYTE_DTYPE, SHARE_VALUE_BYTES)


def masked_dtype(bits: int) -> np.dtype:
    """Dtype of masked vectors on the wire: uint32 up to 32 bits (half the bytes), else uint64."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def _check_array(
    kind: str, name: str, array: object, dtype: np.dtype | tuple[np.dtype, ...], width: int | None
) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise MessageFormatError(
            f"{kind}: {name} must be a NumPy array, got {type(array).__name__}"
        )
    allowed = dtype if isinstance(dtype, tuple) else (dtype,)
    if array.dtype not in allowed:
        expected = " or ".join(str(d) for d in allowed)
        raise MessageFormatError(f"{kind}: {name} must have dtype {expected}, got {array.dtype}")
    shape = (array.shape[0], width) if width is not None and array.ndim == 2 else None
    if (width is None and array.ndim != 1) or (width is not None and array.shape != shape):
        expected = "(n,)" if width is None else f"(n, {width})"
        raise MessageFormatError(f"{kind}: {name} must have shape {expected}, got {array.shape}")
    return array


def _check_value(kind: str, name: str, value: object, expected: type) -> object:
    # bool is an int in Python; a flag where a number belongs is still a malformed message.
    if isinstance(value, bool) or not isinstance(value, expected):
        raise MessageFormatError(
            f"{kind}: {name} must be {expected.__name__}, got {type(value).__name__}"
        )
    return value
