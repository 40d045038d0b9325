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
from typing import ClassVar, Self

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


@dataclasses.dataclass(frozen=True, eq=False)
class _Message:
    """Shared wire conversion; subclasses declare KIND, ARRAYS and VALUES."""

    KIND: ClassVar[str]
    # (field, dtype or allowed dtypes, width of the second dimension or None for a 1-D array)
    ARRAYS: ClassVar[tuple[tuple[str, np.dtype | tuple[np.dtype, ...], int | None], ...]] = ()
    VALUES: ClassVar[tuple[tuple[str, type], ...]] = ()

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


@dataclasses.dataclass(frozen=True, eq=False)
class AdvertiseKeysIns(_Message):
    """Phase 1, server -> client: your node id and the round's settings; advertise two keys."""

    KIND: ClassVar[str] = "secagg.advertise_keys.ins"
    VALUES: ClassVar = (
        ("server_round", int),
        ("node_id", int),
        ("vector_length", int),
        ("bits", int),
        ("threshold", int),
    )
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


@dataclasses.dataclass(frozen=True, eq=False)
class AdvertiseKeysRes(_Message):
    """Phase 1, client -> server: raw X25519 public keys for share encryption and masking."""

    KIND: ClassVar[str] = "secagg.advertise_keys.res"
    VALUES: ClassVar = (("encryption_key", bytes), ("masking_key", bytes))
    encryption_key: bytes
    masking_key: bytes

    def check(self) -> None:
        for name in ("encryption_key", "masking_key"):
            if len(getattr(self, name)) != KEY_BYTES:
                raise MessageFormatError(f"{self.KIND}: {name} must have {KEY_BYTES} bytes")
        if self.encryption_key == self.masking_key:
            raise MessageFormatError(f"{self.KIND}: the two public keys must differ")


@dataclasses.dataclass(frozen=True, eq=False)
class ShareKeysIns(_Message):
    """Phase 2, server -> client: your live neighbours and their public keys; share your secrets."""

    KIND: ClassVar[str] = "secagg.share_keys.ins"
    ARRAYS: ClassVar = (
        ("neighbour_ids", _ID_DTYPE, None),
        ("encryption_keys", _BYTE_DTYPE, KEY_BYTES),
        ("masking_keys", _BYTE_DTYPE, KEY_BYTES),
    )
    VALUES: ClassVar = (("server_round", int),)
    neighbour_ids: np.ndarray
    encryption_keys: np.ndarray
    masking_keys: np.ndarray
    server_round: int


@dataclasses.dataclass(frozen=True, eq=False)
class ShareKeysRes(_Message):
    """Phase 2, client -> server: one encrypted share pair per neighbour, and a seed commitment."""

    KIND: ClassVar[str] = "secagg.share_keys.res"
    ARRAYS: ClassVar = (
        ("receiver_ids", _ID_DTYPE, None),
        ("ciphertexts", _BYTE_DTYPE, CIPHERTEXT_BYTES),
    )
    VALUES: ClassVar = (("seed_commitment", bytes),)
    receiver_ids: np.ndarray
    ciphertexts: np.ndarray
    seed_commitment: bytes

    def check(self) -> None:
        if len(self.seed_commitment) != COMMITMENT_BYTES:
            raise MessageFormatError(
                f"{self.KIND}: seed_commitment must have {COMMITMENT_BYTES} bytes"
            )


@dataclasses.dataclass(frozen=True, eq=False)
class MaskedInputIns(_Message):
    """Phase 3, server -> client: the shares others sent you; send your masked input."""

    KIND: ClassVar[str] = "secagg.masked_input.ins"
    ARRAYS: ClassVar = (
        ("sender_ids", _ID_DTYPE, None),
        ("ciphertexts", _BYTE_DTYPE, CIPHERTEXT_BYTES),
    )
    VALUES: ClassVar = (("server_round", int),)
    sender_ids: np.ndarray
    ciphertexts: np.ndarray
    server_round: int


@dataclasses.dataclass(frozen=True, eq=False)
class MaskedInputRes(_Message):
    """Phase 3, client -> server: y = input + masks mod 2^bits, and the senders it rejected.

    A sender is rejected when its encrypted shares fail authentication or its key confirmation
    does not match; the client holds no shares of a rejected sender and did not mask with it.
    """

    KIND: ClassVar[str] = "secagg.masked_input.res"
    ARRAYS: ClassVar = (
        ("masked_input", (np.dtype(np.uint32), np.dtype(np.uint64)), None),
        ("rejected_senders", _ID_DTYPE, None),
    )
    masked_input: np.ndarray
    rejected_senders: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class UnmaskIns(_Message):
    """Phase 4, server -> client: reveal seed shares of these survivors, key shares of these."""

    KIND: ClassVar[str] = "secagg.unmask.ins"
    ARRAYS: ClassVar = (
        ("survivor_ids", _ID_DTYPE, None),
        ("dropped_ids", _ID_DTYPE, None),
    )
    VALUES: ClassVar = (("server_round", int), ("num_survivors", int))
    survivor_ids: np.ndarray
    dropped_ids: np.ndarray
    server_round: int
    num_survivors: int


@dataclasses.dataclass(frozen=True, eq=False)
class UnmaskRes(_Message):
    """Phase 4, client -> server: the requested share values, one row per owner."""

    KIND: ClassVar[str] = "secagg.unmask.res"
    ARRAYS: ClassVar = (
        ("seed_share_owners", _ID_DTYPE, None),
        ("seed_shares", _BYTE_DTYPE, SHARE_VALUE_BYTES),
        ("key_share_owners", _ID_DTYPE, None),
        ("key_shares", _BYTE_DTYPE, SHARE_VALUE_BYTES),
    )
    seed_share_owners: np.ndarray
    seed_shares: np.ndarray
    key_share_owners: np.ndarray
    key_shares: np.ndarray


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
