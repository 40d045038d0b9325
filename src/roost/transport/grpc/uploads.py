"""Upload slots: how many clients may send their results to the server at once.

A result is received into one buffer of the model's size, so the server's memory for received
models is bounded by the number of slots, not by the number of clients. A client sends its
result's header, then waits: the server grants the upload (and the client sends its chunks) once
a slot is free, so a waiting client costs the server no buffer at all. A slot belongs to one live
upload: it is taken when the upload is granted and given back on every way out (the result was
handed to the round, rejected or dropped; the client disconnected, stalled or was too late).

Uploads wait for slots on the server's event loop; slots come back from any thread (a result
travels with its slot to the round loop, which gives it back once it has used the result).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
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
    """A fixed number of upload slots that uploads wait for, in turn, and can stop waiting for.

    A slot that comes back wakes the longest waiting upload only (thousands may wait), and
    `wake()` makes every waiting upload check whether it should give up.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._free = count
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Slots not taken now."""
        with self._lock:
            return self._free

    async def acquire(self, give_up: Callable[[], bool]) -> Slot | None:
        """Wait for a free slot; None as soon as `give_up()` is true.

        `give_up` is checked on every wake-up and once more before a slot is taken, so a slot is
        never handed to an upload that has already ended. Runs on the server's event loop.
        """
        loop = self._loop = asyncio.get_running_loop()
        while not give_up():
            with self._lock:
                if self._free > 0:
                    self._free -= 1
                    return Slot(self)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._remove(waiter)
                self._pass_on()
                raise
        self._pass_on()
        return None

    def wake(self) -> None:
        """Make every waiting upload check again whether it should give up (from any thread)."""
        self._schedule(self._wake_all)

    def _give_back(self, slot: Slot) -> None:
        with self._lock:
            if not slot._held:
                return
            slot._held = False
            self._free += 1
        self._schedule(self._wake_one)

    def _schedule(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed meanwhile, so nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback)

    def _pass_on(self) -> None:
        """A waiter leaving without a slot hands its wake-up on, so no free slot sits idle."""
        if self.free > 0:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


class Upload:
    """A result being received on one connection: its chunks, its slot, and when data last came.

    A result with chunks holds a slot from its grant on; one without chunks (`slot=None`) is
    complete with its header.
    """

    def __init__(self, header: pb.Header, layout: wire.Layout, slot: Slot | None) -> None:
        try:
            self.assembly = wire.Assembly(header, layout)
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
    def complete(self) -> bool:
        return self.assembly.complete

    def add(self, data: bytes | memoryview) -> None:
        self.assembly.add(data)
        self.last_data = time.monotonic()

    def idle_for(self, now: float) -> float:
        """Seconds since the upload was granted or its last chunk arrived."""
        return now - self.last_data

    def take_slot(self) -> Slot | None:
        """The slot, now owned by the caller (it travels on with the received result)."""
        slot, self.slot = self.slot, None
        return slot

    def release(self) -> None:
        slot = self.take_slot()
        if slot is not None:
            slot.release()
