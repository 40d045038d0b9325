"""The server's side of one secure-aggregation round, as a state object fed one reply at a time.

    server = SecAggServer(cohort, vector_length, server_round=3)
    while not server.done:
        for client_id, reply in transport(server.instructions()):   # any transport
            try:
                server.receive(client_id, *reply)         # or server.drop(client_id, why)
            except SecAggClientError as error:
                log(error)                                # that client is out; the round goes on
        server.close_phase()                              # SecAggAbortedError if it cannot finish
    total = server.result().total                         # exact sum of the survivors' inputs

Phases: 1 advertise keys, 2 share keys, 3 masked input, 4 unmask. Every reply is validated;
whatever is wrong with it is charged to the client that sent it (`SecAggClientError`), which is
then out of the round. The server learns only the sum of the survivors' quantized inputs: it
aborts rather than unmask when fewer than `threshold` clients remain or when the survivors'
graph is split (which would reveal the sums of its parts).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from roost.secagg import crypto, graph, shamir
from roost.secagg import messages as wire
from roost.secagg.errors import (
    CryptoError,
    MessageFormatError,
    SecAggAbortedError,
    SecAggClientError,
    SecAggConfigError,
    ShamirError,
)
from roost.secagg.unmasking import (
    MaskedSum,
    UnmaskPlan,
    plan_unmask,
    recover_secret,
    remove_masks,
    resolve_rejections,
)

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    """Where a round stands; a round ends DONE or ABORTED."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class SecAggResult:
    """The outcome of a round.

    `total` is the sum mod 2^bits of the quantized inputs of `survivors` (uint64); with a
    `Quantizer` sized for the cohort it is the exact integer sum. `failures` gives, for every
    client that misbehaved or went silent, the reason; a client that failed only in the unmask
    phase is also a survivor, since its input was already in the sum.
    """

    total: np.ndarray
    survivors: tuple[str, ...]
    failures: dict[str, str]


class _Rejected(Exception):
    """A reply is wrong; the message is the reason charged to its sender."""


class SecAggServer:
    """The server's state for one round over `cohort` (client ids), for vectors of one length."""

    def __init__(
        self,
        cohort: Sequence[str],
        vector_length: int,
        *,
        server_round: int,
        bits: int = 32,
        parameters: graph.SecAggParameters | None = None,
        shuffle: Callable[[list[int]], None] | None = None,
    ) -> None:
        """`parameters` default to `graph.default_parameters(len(cohort))`; `shuffle` (the ring
        order of the graph) defaults to the OS CSPRNG and exists for reproducible tests."""
        self._clients = list(cohort)
        if len(set(self._clients)) != len(self._clients):
            raise SecAggConfigError("client ids in a cohort must be distinct")
        if not isinstance(vector_length, int) or vector_length < 1 or not 2 <= bits <= 64:
            raise SecAggConfigError("vector_length must be >= 1 and bits in [2, 64]")
        self.parameters = parameters or graph.default_parameters(len(self._clients))
        self.parameters.check(len(self._clients))
        self.server_round, self.vector_length, self.bits = server_round, vector_length, bits
        self._node_of = {client: node for node, client in enumerate(self._clients, start=1)}
        self.graph = graph.random_graph(self._node_of.values(), self.parameters.degree, shuffle)
        self.phase = Phase.ADVERTISE_KEYS
        self._replied: set[int] = set()
        self._failures: dict[int, str] = {}
        self._encryption_keys: dict[int, bytes] = {}
        self._masking_keys: dict[int, bytes] = {}
        self._commitments: dict[int, bytes] = {}
        self._ciphertexts: dict[int, dict[int, np.ndarray]] = {}  # sender -> receiver -> bytes
        self._senders: dict[int, frozenset[int]] = {}  # receiver -> whose shares it got
        self._masked_sum: MaskedSum | None = None
        self._plan = UnmaskPlan({}, {}, frozenset())
        self._seed_shares: dict[int, list[shamir.Share]] = {}
        self._key_shares: dict[int, list[shamir.Share]] = {}
        self._survivors: frozenset[int] = frozenset()
        self._result: SecAggResult | None = None
        self._probe_key = crypto.generate_private_key()  # for trial agreements with client keys
        self._instructions = {
            node: self._advertise_instruction(node) for node in self._node_of.values()
        }

    @property
    def threshold(self) -> int:
        """t: shares needed to rebuild any client's secret, and the fewest survivors allowed."""
        return self.parameters.threshold

    @property
    def done(self) -> bool:
        """True once the round has a result (or was aborted)."""
        return self.phase in (Phase.DONE, Phase.ABORTED)

    def node_id(self, client_id: str) -> int:
        """The node id of `client_id` in this round."""
        return self._node_of[client_id]

    def instructions(self) -> dict[str, wire.WireMessage]:
        """This phase's instruction for every client still in the round, as wire messages."""
        return {self._clients[node - 1]: ins.to_wire() for node, ins in self._instructions.items()}

    def receive(self, client_id: str, arrays: object, values: object) -> None:
        """Take one client's reply to this phase; `SecAggClientError` (and it is out) if bad."""
        node = self._node_of.get(client_id) if isinstance(client_id, str) else None
        if node is None or self.done:
            raise SecAggClientError(str(client_id), "is not part of this round's cohort")
        if node not in self._instructions or node in self._replied or node in self._failures:
            raise SecAggClientError(client_id, f"sent an unexpected {self.phase.value} reply")
        handlers = {
            Phase.ADVERTISE_KEYS: self._receive_keys,
            Phase.SHARE_KEYS: self._receive_shares,
            Phase.MASKED_INPUT: self._receive_masked_input,
            Phase.UNMASK: self._receive_unmask,
        }
        try:
            handlers[self.phase](node, arrays, values)
        except (_Rejected, MessageFormatError, CryptoError, ShamirError) as error:
            self._fail(node, f"{self.phase.value}: {error}")
            raise SecAggClientError(client_id, self._failures[node]) from error
        self._replied.add(node)

    def drop(self, client_id: str, reason: str) -> None:
        """Record that a client will not answer this phase (timeout, disconnect, ...).

        Ignored for a client that already answered this phase or is already out.
        """
        node = self._node_of.get(client_id) if isinstance(client_id, str) else None
        if node is not None and node in self._instructions and node not in self._replied:
            self._fail(node, f"{self.phase.value}: {reason}")

    def close_phase(self) -> None:
        """End this phase: whoever has not answered is out; prepare the next phase's
        instructions, or compute the result after the unmask phase.

        Raises `SecAggAbortedError` when the round cannot be completed safely.
        """
        if self.done:
            raise SecAggAbortedError(f"the round is already {self.phase.value}")
        for node in set(self._instructions) - self._replied:
            self._fail(node, f"{self.phase.value}: no reply")
        closers = {
            Phase.ADVERTISE_KEYS: self._close_keys,
            Phase.SHARE_KEYS: self._close_shares,
            Phase.MASKED_INPUT: self._close_masked_input,
            Phase.UNMASK: self._close_unmask,
        }
        closing, self._replied = self.phase, set()
        try:
            closers[closing]()
        except SecAggAbortedError:
            self.phase, self._instructions = Phase.ABORTED, {}
            raise
        logger.debug("secagg round %s: %s closed", self.server_round, closing.value)

    def result(self) -> SecAggResult:
        """The round's result; only after the unmask phase closed."""
        if self._result is None:
            raise SecAggAbortedError(f"no result: the round is in phase {self.phase.value}")
        return self._result

    def failures(self) -> dict[str, str]:
        """Client id -> why it is out (or misbehaved), so far."""
        return {self._clients[node - 1]: why for node, why in sorted(self._failures.items())}

    # Phase 1: advertise keys.

    def _advertise_instruction(self, node: int) -> wire.AdvertiseKeysIns:
        return wire.AdvertiseKeysIns(
            self.server_round, node, self.vector_length, self.bits, self.threshold
        )

    def _receive_keys(self, node: int, arrays: object, values: object) -> None:
        reply = wire.AdvertiseKeysRes.from_wire(arrays, values)
        crypto.check_public_key(reply.encryption_key, self._probe_key)
        crypto.check_public_key(reply.masking_key, self._probe_key)
        taken = set(self._encryption_keys.values()) | set(self._masking_keys.values())
        if reply.encryption_key in taken or reply.masking_key in taken:
            raise _Rejected("advertised a public key another client already uses")
        self._encryption_keys[node] = reply.encryption_key
        self._masking_keys[node] = reply.masking_key

    def _close_keys(self) -> None:
        live = self._keep_well_connected(set(self._encryption_keys) - set(self._failures))
        self._instructions = {}
        for node in sorted(live):
            neighbours = sorted(self.graph[node] & live)
            self._instructions[node] = wire.ShareKeysIns(
                np.array(neighbours, dtype=np.int64),
                _key_rows([self._encryption_keys[n] for n in neighbours]),
                _key_rows([self._masking_keys[n] for n in neighbours]),
                self.server_round,
            )
        self.phase = Phase.SHARE_KEYS

    # Phase 2: share keys.

    def _receive_shares(self, node: int, arrays: object, values: object) -> None:
        reply = wire.ShareKeysRes.from_wire(arrays, values)
        expected = self._instructions[node]
        assert isinstance(expected, wire.ShareKeysIns)
        receivers = [int(r) for r in reply.receiver_ids]
        if sorted(receivers) != sorted(int(n) for n in expected.neighbour_ids):
            raise _Rejected(
                f"sent shares to nodes {sorted(receivers)}, its neighbours are "
                f"{sorted(int(n) for n in expected.neighbour_ids)}"
            )
        self._ciphertexts[node] = dict(zip(receivers, reply.ciphertexts, strict=True))
        self._commitments[node] = reply.seed_commitment

    def _close_shares(self) -> None:
        live = self._keep_well_connected(set(self._ciphertexts) - set(self._failures))
        self._senders = {node: self.graph[node] & live for node in live}
        self._masked_sum = MaskedSum(self.vector_length, self._senders)
        self._instructions = {}
        for node in sorted(live):
            senders = sorted(self._senders[node])
            self._instructions[node] = wire.MaskedInputIns(
                np.array(senders, dtype=np.int64),
                np.stack([self._ciphertexts[s][node] for s in senders]).astype(np.uint8),
                self.server_round,
            )
        self.phase = Phase.MASKED_INPUT

    def _keep_well_connected(self, live: set[int]) -> set[int]:
        """Drop clients with fewer than t − 1 live neighbours (their secrets could not be rebuilt),
        repeatedly, since each drop thins its neighbours' neighbourhoods; then check the count."""
        self._require(len(live), f"after {self.phase.value}")
        shrinking = True
        while shrinking:
            thin = {n for n in live if len(self.graph[n] & live) + 1 < self.threshold}
            for node in thin:
                self._fail(node, f"{self.phase.value}: too few live neighbours to hold its shares")
            live -= thin
            shrinking = bool(thin)
        self._require(len(live), f"after {self.phase.value}")
        return live

    # Phase 3: masked input.

    def _receive_masked_input(self, node: int, arrays: object, values: object) -> None:
        reply = wire.MaskedInputRes.from_wire(arrays, values)
        masked = reply.masked_input
        if masked.dtype != wire.masked_dtype(self.bits):
            raise _Rejected(
                f"masked vector has dtype {masked.dtype}; {self.bits}-bit rounds use "
                f"{wire.masked_dtype(self.bits)}"
            )
        if masked.shape != (self.vector_length,):
            raise _Rejected(
                f"masked vector has length {masked.size}, the round's is {self.vector_length}"
            )
        if masked.size and int(masked.max()) >> self.bits:
            raise _Rejected(f"masked vector has values >= 2^{self.bits}")
        rejected = {int(s) for s in reply.rejected_senders}
        if not rejected <= self._senders[node]:
            raise _Rejected(f"rejected shares of nodes {sorted(rejected)} it never received")
        assert self._masked_sum is not None
        self._masked_sum.add(node, masked.astype(np.uint64), rejected)

    def _close_masked_input(self) -> None:
        assert self._masked_sum is not None
        masked_sum = self._masked_sum
        reported = set(masked_sum.rejections)
        for node, partners in resolve_rejections(masked_sum.rejections, reported).items():
            self._fail(
                node,
                f"masked_input: shares between it and nodes {partners} failed authentication "
                "or key confirmation",
            )
        for node in sorted(set(self._senders) - reported):
            rejecters = sorted(n for n in reported if node in masked_sum.rejections[n])
            if rejecters:  # say why a silent node may have gone silent
                self._failures[node] += (
                    f"; its shares failed authentication or key confirmation at nodes {rejecters}"
                )
        survivors = frozenset(reported - set(self._failures))
        masked_sum.close(survivors)
        self._require(len(survivors), "after masked_input")
        if not graph.is_connected(self.graph, survivors):
            raise SecAggAbortedError(
                "the survivors' masking graph is split; unmasking would reveal partial sums"
            )
        self._plan = plan_unmask(self._senders, masked_sum.rejections, survivors, self.threshold)
        self._instructions = {
            node: wire.UnmaskIns(
                np.array(sorted(seeds), dtype=np.int64),
                np.array(sorted(keys), dtype=np.int64),
                self.server_round,
                len(survivors),
            )
            for node, (seeds, keys) in self._plan.requests.items()
        }
        self._survivors = survivors
        self.phase = Phase.UNMASK

    # Phase 4: unmask.

    def _receive_unmask(self, node: int, arrays: object, values: object) -> None:
        reply = wire.UnmaskRes.from_wire(arrays, values)
        seed_owners, key_owners = self._plan.requests[node]
        got_seeds = {int(o) for o in reply.seed_share_owners}
        got_keys = {int(o) for o in reply.key_share_owners}
        if got_seeds != seed_owners or got_keys != key_owners:
            raise _Rejected(
                f"sent shares for seeds {sorted(got_seeds)} and keys {sorted(got_keys)}, asked "
                f"for {sorted(seed_owners)} and {sorted(key_owners)}"
            )
        seeds = _parse_shares(node, reply.seed_share_owners, reply.seed_shares)
        keys = _parse_shares(node, reply.key_share_owners, reply.key_shares)
        for owner, share in seeds:
            self._seed_shares.setdefault(owner, []).append(share)
        for owner, share in keys:
            self._key_shares.setdefault(owner, []).append(share)

    def _close_unmask(self) -> None:
        self._require(len(set(self._plan.requests) - set(self._failures)), "after unmask")
        seeds = {
            owner: self._recover(owner, self._seed_shares, self._seed_matches)
            for owner in sorted(self._survivors)
        }
        dropped_keys = {
            owner: self._recover(owner, self._key_shares, self._key_matches)
            for owner in sorted(self._plan.needed_keys)
        }
        assert self._masked_sum is not None
        total = remove_masks(
            self._masked_sum.total,
            seeds=seeds,
            dropped_keys=dropped_keys,
            dropped_neighbours=self._plan.mask_partners,
            masking_keys=self._masking_keys,
            server_round=self.server_round,
            bits=self.bits,
        )
        survivors = tuple(self._clients[node - 1] for node in sorted(self._survivors))
        self._result = SecAggResult(total, survivors, self.failures())
        self._instructions = {}
        self.phase = Phase.DONE

    def _recover(
        self, owner: int, shares: dict[int, list[shamir.Share]], check: Callable[[int, bytes], bool]
    ) -> bytes:
        secret, wrong = recover_secret(
            shares.get(owner, []), self.threshold, lambda s: check(owner, s), owner
        )
        for holder in wrong:
            self._failures.setdefault(
                holder, f"unmask: sent a wrong share of node {owner}'s secret"
            )
        return secret

    def _seed_matches(self, owner: int, seed: bytes) -> bool:
        return crypto.commit_seed(seed, self.server_round, owner) == self._commitments[owner]

    def _key_matches(self, owner: int, raw_key: bytes) -> bool:
        try:
            key = crypto.load_private_key(raw_key)
        except CryptoError:
            return False
        return crypto.public_bytes(key) == self._masking_keys[owner]

    # Bookkeeping.

    def _fail(self, node: int, reason: str) -> None:
        self._failures.setdefault(node, reason)
        if self.phase is Phase.MASKED_INPUT and self._masked_sum is not None:
            self._masked_sum.settle(node)

    def _require(self, remaining: int, when: str) -> None:
        if remaining < self.threshold:
            raise SecAggAbortedError(
                f"{remaining} clients left {when}, fewer than the threshold {self.threshold}; "
                "the round cannot be completed (start it again with more clients)"
            )


def _key_rows(keys: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), crypto.KEY_BYTES)


def _parse_shares(
    holder: int, owners: np.ndarray, rows: np.ndarray
) -> list[tuple[int, shamir.Share]]:
    return [
        (int(owner), shamir.Share.from_bytes(holder, row.tobytes()))
        for owner, row in zip(owners, rows, strict=True)
    ]
