"""Flower's records: `Array`, `ArrayRecord`, `MetricRecord`, `ConfigRecord`, `RecordDict`.

A record is an ordered mapping with typed values. `ArrayRecord` keeps the names and the order of
the arrays it was made from (a list of NumPy arrays gets the keys "0", "1", …; a PyTorch
`state_dict` keeps its own), which is how an app's arrays come back out in the same order on the
other side. Arrays are held as NumPy arrays, never pickled; `Array.data` is NumPy's `.npy` form,
written and read without pickle.
"""

from __future__ import annotations

import io
import numbers
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

NUMPY_STYPE = "numpy.ndarray"


def _torch_tensor_type() -> type | None:
    # A tensor can only exist once torch is imported; never import it for the check.
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


class Array:
    """One array of an `ArrayRecord`.

    Build it from a NumPy array (`Array(ndarray)`), a PyTorch tensor (`Array(tensor)`), or from its
    serialized form `Array(dtype=..., shape=..., stype="numpy.ndarray", data=npy_bytes)`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._array = _array_from(args, kwargs)

    @property
    def dtype(self) -> str:
        return str(self._array.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def stype(self) -> str:
        return NUMPY_STYPE

    @property
    def data(self) -> bytes:
        """The array as NumPy `.npy` bytes (written without pickle)."""
        buffer = io.BytesIO()
        np.save(buffer, self._array, allow_pickle=False)
        return buffer.getvalue()

    def numpy(self) -> np.ndarray:
        """A copy of the array (changing it leaves the record as it was)."""
        return self._array.copy()

    def __repr__(self) -> str:
        return f"Array(dtype={self.dtype!r}, shape={self.shape})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Array):
            return NotImplemented
        return self._array.dtype == other._array.dtype and np.array_equal(self._array, other._array)

    __hash__ = None  # type: ignore[assignment]


def array_value(array: Array) -> np.ndarray:
    """The array inside `array`, without a copy (for roost's own conversions)."""
    return array._array


def array_values(record: ArrayRecord) -> list[np.ndarray]:
    """The arrays inside `record`, in its order, without copies (for roost's own conversions)."""
    return [array_value(array) for array in record.values()]


def wrap_array(value: np.ndarray) -> Array:
    """An `Array` holding `value` itself, without a copy (for roost's own conversions)."""
    array = Array.__new__(Array)
    array._array = value
    return array


def wrap_arrays(names: list[str], values: list[np.ndarray]) -> ArrayRecord:
    """An `ArrayRecord` of `values` under `names`, without copies."""
    record = ArrayRecord()
    for name, value in zip(names, values, strict=True):
        record[name] = wrap_array(value)
    return record


def _array_from(args: tuple[Any, ...], kwargs: dict[str, Any]) -> np.ndarray:
    if len(args) == 1 and not kwargs:
        value = args[0]
        tensor_type = _torch_tensor_type()
        if tensor_type is not None and isinstance(value, tensor_type):
            return value.detach().cpu().numpy().copy()
        if isinstance(value, np.ndarray):
            # A snapshot, as Flower serializes at once: later in-place changes stay outside.
            return value.copy()
        raise TypeError(
            f"Array(...) takes a NumPy array or a PyTorch tensor, got {type(value).__name__}"
        )
    names = ("dtype", "shape", "stype", "data")
    fields = dict(zip(names, args, strict=False)) | kwargs
    if set(fields) != set(names):
        raise TypeError(
            "Array(...) takes one NumPy array or tensor, or dtype=, shape=, stype= and data="
        )
    if fields["stype"] != NUMPY_STYPE:
        raise TypeError(
            f"Array stype {fields['stype']!r} is not supported; roost reads {NUMPY_STYPE!r}"
        )
    array = np.load(io.BytesIO(fields["data"]), allow_pickle=False)
    if str(array.dtype) != fields["dtype"] or tuple(array.shape) != tuple(fields["shape"]):
        raise ValueError(
            f"Array data holds {array.dtype} {array.shape}, not the declared "
            f"{fields['dtype']} {tuple(fields['shape'])}"
        )
    return array


class _Record(MutableMapping):
    """An ordered `str -> value` mapping that checks every value it stores."""

    kind = "record"

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {}
        self.update(items or {})

    def _check(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"{type(self).__name__} keys must be str, got {key!r}")
        self._data[key] = self._check(key, value)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Record) or type(other) is not type(self):
            return NotImplemented
        return list(self._data.items()) == list(other._data.items())

    __hash__ = None  # type: ignore[assignment]


class ArrayRecord(_Record):
    """Named arrays, in order: `ArrayRecord(list_of_ndarrays)`, `ArrayRecord(model.state_dict())`
    or `ArrayRecord({"name": Array(...)})`. `keep_input` is accepted (roost never empties the
    input)."""

    kind = "arrays"

    def __init__(
        self,
        source: Any = None,
        *,
        array_dict: Mapping[str, Array] | None = None,
        numpy_ndarrays: list[np.ndarray] | None = None,
        torch_state_dict: Mapping[str, Any] | None = None,
        keep_input: bool = True,
    ) -> None:
        super().__init__()
        sources = (source, array_dict, numpy_ndarrays, torch_state_dict)
        given = [value for value in sources if value is not None]
        if len(given) > 1:
            raise TypeError("ArrayRecord takes one source: a list of arrays, a dict or state_dict")
        if not given:
            return
        source = given[0]
        if isinstance(source, list | tuple):
            for index, array in enumerate(source):
                self[str(index)] = array
        elif isinstance(source, Mapping):
            self.update(source)
        else:
            raise TypeError(
                "ArrayRecord takes a list of NumPy arrays, a PyTorch state_dict or a dict of "
                f"Array, got {type(source).__name__}"
            )

    def _check(self, key: str, value: Any) -> Array:
        if isinstance(value, Array):
            return value
        return Array(value)

    @classmethod
    def from_numpy_ndarrays(cls, ndarrays: list[np.ndarray], *, keep_input: bool = True) -> Any:
        return cls(numpy_ndarrays=list(ndarrays))

    @classmethod
    def from_torch_state_dict(
        cls, state_dict: Mapping[str, Any], *, keep_input: bool = True
    ) -> Any:
        return cls(torch_state_dict=state_dict)

    @classmethod
    def from_array_dict(cls, array_dict: Mapping[str, Array], *, keep_input: bool = True) -> Any:
        return cls(array_dict=array_dict)

    def to_numpy_ndarrays(self, *, keep_input: bool = True) -> list[np.ndarray]:
        """The arrays, in order (copies)."""
        return [array.numpy() for array in self.values()]

    def to_torch_state_dict(self, *, keep_input: bool = True) -> OrderedDict[str, Any]:
        """The arrays as a PyTorch `state_dict` (names and order kept)."""
        import torch

        return OrderedDict((key, torch.from_numpy(array.numpy())) for key, array in self.items())

    def count_bytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(array_value(array).nbytes for array in self.values())


_METRIC_TYPES = (int, float)
_CONFIG_TYPES = (bool, int, float, str, bytes)


def _plain(value: Any) -> Any:
    """NumPy scalars as Python scalars; everything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _checked_value(record: str, key: str, value: Any, allowed: tuple[type, ...]) -> Any:
    value = _plain(value)
    if isinstance(value, list | tuple):
        items = [_plain(item) for item in value]
        kinds = {_kind(item, allowed) for item in items}
        if None in kinds or len(kinds) > 1:
            raise TypeError(
                f"{record}[{key!r}]: a list value must hold items of one type among "
                f"{', '.join(t.__name__ for t in allowed)}"
            )
        return items
    if _kind(value, allowed) is None:
        raise TypeError(
            f"{record}[{key!r}] is a {type(value).__name__}; allowed: "
            f"{', '.join(t.__name__ for t in allowed)} and lists of them"
        )
    return value


def _kind(value: Any, allowed: tuple[type, ...]) -> type | None:
    if isinstance(value, bool):
        return bool if bool in allowed else None
    for kind in allowed:
        if isinstance(value, kind):
            return kind
    if float in allowed and isinstance(value, numbers.Real):
        return float
    return None


class _ScalarRecord(_Record):
    """A record of scalars of `value_types` (or lists of one kind of them)."""

    value_types: tuple[type, ...] = ()

    def _check(self, key: str, value: Any) -> Any:
        return _checked_value(type(self).__name__, key, value, self.value_types)


class MetricRecord(_ScalarRecord):
    """Metrics: `str -> int | float | list[int] | list[float]`."""

    kind, value_types = "metrics", _METRIC_TYPES

    def __init__(self, metric_dict: Mapping[str, Any] | None = None, keep_input: bool = True):
        super().__init__(metric_dict)


class ConfigRecord(_ScalarRecord):
    """Configuration: `str -> int | float | str | bytes | bool` or lists of one of them."""

    kind, value_types = "config", _CONFIG_TYPES

    def __init__(self, config_dict: Mapping[str, Any] | None = None, keep_input: bool = True):
        super().__init__(config_dict)


RECORD_TYPES = (ArrayRecord, MetricRecord, ConfigRecord)


class RecordDict(_Record):
    """A message's content (or a node's state): named `ArrayRecord`, `MetricRecord` and
    `ConfigRecord` entries, in order."""

    kind = "records"

    def __init__(self, records: Mapping[str, Any] | None = None) -> None:
        super().__init__(records)

    def _check(self, key: str, value: Any) -> Any:
        if not isinstance(value, RECORD_TYPES):
            raise TypeError(
                f"RecordDict[{key!r}] is a {type(value).__name__}; a RecordDict holds "
                "ArrayRecord, MetricRecord and ConfigRecord values"
            )
        return value

    @property
    def array_records(self) -> MutableMapping[str, ArrayRecord]:
        """The `ArrayRecord` entries, as a live view: what is set through it is set here."""
        return _RecordsOfType(self, ArrayRecord)

    @property
    def metric_records(self) -> MutableMapping[str, MetricRecord]:
        """The `MetricRecord` entries, as a live view."""
        return _RecordsOfType(self, MetricRecord)

    @property
    def config_records(self) -> MutableMapping[str, ConfigRecord]:
        """The `ConfigRecord` entries, as a live view."""
        return _RecordsOfType(self, ConfigRecord)


class _RecordsOfType(MutableMapping):
    """The entries of one record type in a `RecordDict`; writes go through to it, as Flower's
    `record_dict.config_records["name"] = ConfigRecord(...)` expects."""

    def __init__(self, records: RecordDict, kind: type) -> None:
        self._records = records
        self._kind = kind

    def __getitem__(self, key: str) -> Any:
        value = self._records[key]
        if not isinstance(value, self._kind):
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(value, self._kind):
            raise TypeError(
                f"{key!r}: expected a {self._kind.__name__}, got {type(value).__name__}"
            )
        self._records[key] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # only this type's entries may be deleted through the view
        del self._records[key]

    def __iter__(self) -> Iterator[str]:
        return (key for key, value in self._records.items() if isinstance(value, self._kind))

    def __len__(self) -> int:
        return sum(1 for _ in self)


__all__ = ["Array", "ArrayRecord", "ConfigRecord", "MetricRecord", "RecordDict"]
