"""Flower's `Message`, `Metadata`, `Error`, `Context` and `MessageType`.

A `Message` carries a `RecordDict` (or an `Error`) and its `Metadata`. The server side makes one
per node (`Message(content, dst_node_id, message_type)`); the client side answers with
`Message(content, reply_to=message)`. roost carries a message to its node as a phase of the "flwr"
protocol (`roost.compat.flwr.codec`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from roost.compat.flwr.records import RecordDict

DEFAULT_TTL = 43200.0
"""Flower's default time-to-live of a message: 12 hours."""

RUN_ID = 1
"""The run id apps see in `context.run_id` and message metadata (roost serves one run)."""

SERVER_NODE_ID = 0
"""The node id of the server side (the ServerApp) in every message's metadata."""

_message_numbers = itertools.count(1)


class MessageType:
    """The message types a `ClientApp` answers (`train.NAME` etc. for named actions)."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    QUERY = "query"
    SYSTEM = "system"


@dataclass
class Metadata:
    """Where a message comes from and goes to, which group (round) it belongs to, and its type."""

    run_id: int
    message_id: str
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str
    group_id: str
    ttl: float
    message_type: str
    created_at: float = field(default_factory=time.time)


@dataclass
class Error:
    """Why a node could not answer a message: a code and a one-line reason."""

    code: int
    reason: str | None = None


class ErrorCode:
    """The error codes roost uses in `Error.code` (Flower's numbering)."""

    UNKNOWN = 0
    LOAD_CLIENT_APP_EXCEPTION = 1
    CLIENT_APP_RAISED_EXCEPTION = 2
    MESSAGE_UNAVAILABLE = 3
    REPLY_MESSAGE_UNAVAILABLE = 4
    NODE_UNAVAILABLE = 5
    MOD_FAILED_PRECONDITION = 6


_FORMS = (
    "Message(content, dst_node_id, message_type, *, ttl=None, group_id=None), "
    "Message(content, *, reply_to=message) or Message(error, *, reply_to=message)"
)


class Message:
    """A message between the ServerApp and a ClientApp: content (or an error) and metadata.

    Forms: `Message(content, dst_node_id, message_type, *, ttl=None, group_id=None)` to send, and
    `Message(content, *, reply_to=message)` / `Message(error, *, reply_to=message)` to answer.
    """

    def __init__(
        self,
        content: RecordDict | Error | None = None,
        dst_node_id: int | None = None,
        message_type: str | None = None,
        *,
        error: Error | None = None,
        ttl: float | None = None,
        group_id: str | None = None,
        reply_to: Message | None = None,
    ) -> None:
        if isinstance(content, Error):
            content, error = None, content
        if (content is None) == (error is None):
            raise TypeError(f"a Message has content or an error; use one of {_FORMS}")
        if content is not None and not isinstance(content, RecordDict):
            raise TypeError(f"Message content must be a RecordDict, got {type(content).__name__}")
        self._content = content
        self._error = error
        if reply_to is not None:
            if dst_node_id is not None or message_type is not None or group_id is not None:
                raise TypeError(f"a reply takes its addresses from reply_to; use one of {_FORMS}")
            self.metadata = reply_metadata(reply_to.metadata, ttl)
            return
        if dst_node_id is None or message_type is None:
            raise TypeError(f"a new Message needs dst_node_id and message_type; use {_FORMS}")
        self.metadata = Metadata(
            run_id=0,
            message_id="",
            src_node_id=SERVER_NODE_ID,
            dst_node_id=int(dst_node_id),
            reply_to_message_id="",
            group_id="" if group_id is None else str(group_id),
            ttl=DEFAULT_TTL if ttl is None else float(ttl),
            message_type=str(message_type),
        )

    @property
    def content(self) -> RecordDict:
        if self._content is None:
            raise ValueError(
                f"this message carries an error, not content: {self._error}; check "
                "message.has_error() first"
            )
        return self._content

    @content.setter
    def content(self, value: RecordDict) -> None:
        if not isinstance(value, RecordDict):
            raise TypeError(f"Message content must be a RecordDict, got {type(value).__name__}")
        self._content, self._error = value, None

    @property
    def error(self) -> Error:
        if self._error is None:
            raise ValueError("this message carries content, not an error")
        return self._error

    @error.setter
    def error(self, value: Error) -> None:
        self._content, self._error = None, value

    def has_content(self) -> bool:
        return self._content is not None

    def has_error(self) -> bool:
        return self._error is not None

    def create_reply(self, content: RecordDict, ttl: float | None = None) -> Message:
        """The older spelling of `Message(content, reply_to=self)`."""
        return Message(content, reply_to=self, ttl=ttl)

    def create_error_reply(self, error: Error, ttl: float | None = None) -> Message:
        """The older spelling of `Message(error, reply_to=self)`."""
        return Message(error, reply_to=self, ttl=ttl)

    def __repr__(self) -> str:
        body = f"content={self._content!r}" if self._content is not None else f"{self._error!r}"
        return f"Message(metadata={self.metadata!r}, {body})"


def reply_metadata(original: Metadata, ttl: float | None = None) -> Metadata:
    """The metadata of a reply to a message with `original` metadata."""
    return Metadata(
        run_id=original.run_id,
        message_id="",
        src_node_id=original.dst_node_id,
        dst_node_id=original.src_node_id,
        reply_to_message_id=original.message_id,
        group_id=original.group_id,
        ttl=original.ttl if ttl is None else float(ttl),
        message_type=original.message_type,
    )


def new_message_id(run_id: int) -> str:
    """A message id unique within this process."""
    return f"{run_id}-{next(_message_numbers)}"


@dataclass
class Context:
    """What an app knows about where it runs.

    `node_config` holds `"partition-id"` and `"num-partitions"` on a ClientApp's node;
    `run_config` is the project's `[tool.flwr.app.config]` with the run's overrides; `state` is
    the node's own `RecordDict`, kept across the messages the node answers.
    """

    run_id: int
    node_id: int
    node_config: dict[str, Any]
    state: RecordDict
    run_config: dict[str, Any]


__all__ = ["Context", "Error", "Message", "MessageType", "Metadata"]
