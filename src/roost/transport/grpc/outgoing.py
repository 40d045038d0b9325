"""A cohort's instructions on their way out: each array serialized once, however many clients.

A round sends its cohort the same model, often inside a separate instruction per client (a
client's own config, or secure aggregation's per-client payload beside the shared model). The
chunk frames of an array that several sends carry are built once and shared by all of them, so
a round holds one serialized copy of the model, not one per client; gRPC copies a frame only
while it is being written, and the server's send slots bound how many are. The frames of an
array that a single send carries are built as that send is written, so per-client payloads are
never all in memory at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from roost.core.types import ClientId, Instruction
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc import wire


class CohortFrames:
    """The frames of one run's instructions, with the chunks of shared arrays built once.

    Args:
        cohort: `(client_id, instruction)` pairs, as a `Transport.run` receives them.
        chunk_bytes: array bytes per chunk frame.

    Raises `InvalidMessageError` (before anything is sent) if an instruction cannot travel.
    """

    def __init__(self, cohort: Sequence[tuple[ClientId, Instruction]], chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self._headers: dict[int, pb.Header] = {}
        self._arrays: dict[int, list[np.ndarray]] = {}
        sends_per_array: Counter[int] = Counter()
        for _, instruction in cohort:
            key = id(instruction)
            if key not in self._headers:
                self._headers[key] = wire.instruction_header(instruction, chunk_bytes)
                self._arrays[key] = wire.instruction_arrays(instruction)
            sends_per_array.update(id(array) for array in self._arrays[key])
        self._shared: dict[int, tuple[bytes, ...]] = {}
        for arrays in self._arrays.values():
            for array in arrays:
                key = id(array)
                if sends_per_array[key] > 1 and key not in self._shared:
                    self._shared[key] = tuple(wire.array_chunk_frames(array, chunk_bytes))

    @property
    def shared_bytes(self) -> int:
        """Bytes of chunk frames built once and shared by several sends."""
        return sum(len(frame) for frames in self._shared.values() for frame in frames)

    def frames(self, instruction: Instruction, message_id: int) -> Iterator[bytes]:
        """The frames of `instruction` (one of the cohort's) sent as message `message_id`."""
        key = id(instruction)
        yield wire.header_frame(self._headers[key], "instruction", message_id)
        for array in self._arrays[key]:
            shared = self._shared.get(id(array))
            if shared is not None:
                yield from shared
            else:
                yield from wire.array_chunk_frames(array, self.chunk_bytes)
