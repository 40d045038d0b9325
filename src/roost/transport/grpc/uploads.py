"""Upload slots: how many clients may send their results to the server at once.

A result is received into one buffer of the model's size, so the server's memory for received
models is bounded by the number of slots, not by the number of clients. A slot belongs to one live
upload: it is taken when the upload starts and given back on every way out (the result was
handed to the round, rejected or dropped; the client disconnected, stalled or was too late).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc import wire


class Slot:
    """One taken upload slot; `release` gives it back (once, however often it is called)."""

    def __init__(self, slots: UploadSlots) -> None:
        self._slots = slots
        self._held = True

    def release(self) -> None:
        self._slots._give_back(self)


class UploadSlots:
    """A fixed number of upload slots that readers wait for, and can stop waiting for.

    Waiting is woken by `wake()` as well as by a slot coming back, so that a reader whose
    connection closed or whose result nobody awaits any more stops waiting at once.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._free = count
        self._changed = threading.Condition(threading.Lock())

    @property
    def free(self) -> int:
        """Slots not taken now."""
        with self._changed:
            return self._free

    def acquire(self, give_up: Callable[[], bool]) -> Slot | None:
        """Wait for a free slot; None as soon as `give_up()` is true.

        `give_up` is checked on every wake-up and once more when a slot is free, so a slot is
        never handed to an upload that has already ended. It runs under this pool's lock: it
        may take other locks, as long as nothing calls into this pool while holding them.
        """
        with self._changed:
            while self._free == 0 and not give_up():
                self._changed.wait()
            if give_up():
                return None
            self._free -= 1
            return Slot(self)

    def wake(self) -> None:
        """Make every waiting reader check again whether it should give up."""
        with self._changed:
            self._changed.notify_all()

    def _give_back(self, slot: Slot) -> None:
        with self._changed:
            if not slot._held:
                return
            slot._held = False
            self._free += 1
            # Every waiter: the first one woken may be one that gives up instead.
            self._changed.notify_all()


class Upload:
    """A result being received on one connection: its chunks, its slot, and when data last came.

    `keep=False` reads a result only to stay in step with the stream's framing (a stale or
    rejected result): it allocates nothing and holds no slot.
    """

    def __init__(
        self, header: pb.Header, layout: wire.Layout, *, keep: bool, slot: Slot | None
    ) -> None:
        try:
            self.assembly = wire.Assembly(header, layout, keep=keep)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        self.slot = slot
        self.last_data = time.monotonic()

    @property
    def message_id(self) -> int:
        return self.assembly.header.message_id

    @property
    def keep(self) -> bool:
        return self.assembly.keep

    @property
    def complete(self) -> bool:
        return self.assembly.complete

    def add(self, data: bytes | memoryview) -> None:
        self.assembly.add(data)
        self.last_data = time.monotonic()

    def idle_for(self, now: float) -> float:
        """Seconds since the header or the last chunk arrived."""
        return now - self.last_data

    def take_slot(self) -> Slot | None:
        """The slot, now owned by the caller (it travels on with the received result)."""
        slot, self.slot = self.slot, None
        return slot

    def release(self) -> None:
        slot = self.take_slot()
        if slot is not None:
            slot.release()
