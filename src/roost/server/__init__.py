"""The server side: the round loop, its configuration, History and resumable state."""

from roost.server.history import History, RoundRecord
from roost.server.loop import ServerConfig, ServerState, run_rounds

__all__ = ["History", "RoundRecord", "ServerConfig", "ServerState", "run_rounds"]
