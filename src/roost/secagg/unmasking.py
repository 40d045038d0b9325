"""Server-side arithmetic of the last two phases: summing masked vectors and removing masks.

`MaskedSum` keeps a running sum of masked vectors (memory O(vector), not O(clients × vector)). A
vector is held back only while its sender might still be dropped: until all its neighbours have
reported, and until the end of the phase if it is part of a failed pair (one side rejected the
other's shares), since one side of every failed pair is dropped and its vector must stay out.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from roost.secagg import crypto, shamir
from roost.secagg.errors import SecAggAbortedError, ShamirError

# How many subsets of shares to try when the first `threshold` shares do not rebuild a secret
# that matches its public key or commitment (someone sent a wrong share).
MAX_RECOVERY_ATTEMPTS = 2000


class MaskedSum:
    """The modular sum of the masked vectors of the nodes that are sure to stay in the sum.

    `neighbours[u]`: the nodes u exchanged shares with (who may reject u, and whom u may reject).
    """

    def __init__(self, length: int, neighbours: Mapping[int, Collection[int]]) -> None:
        self.total = np.zeros(length, dtype=np.uint64)
        self.included: set[int] = set()
        self.rejections: dict[int, frozenset[int]] = {}  # reporter -> senders it rejected
        self._neighbours = neighbours
        self._pending: dict[int, np.ndarray] = {}
        self._unreported = set(neighbours)

    def add(self, node: int, masked: np.ndarray, rejected_senders: Iterable[int]) -> None:
        """Take `node`'s masked vector and the senders whose shares it rejected."""
        self.rejections[node] = frozenset(rejected_senders)
        self._pending[node] = masked
        self.settle(node)

    def settle(self, reporter: int) -> None:
        """`reporter` has answered or dropped: it will reject nobody else."""
        self._unreported.discard(reporter)
        for node in {reporter, *self._neighbours[reporter]}:
            if node in self._pending and not self._may_be_dropped(node):
                self._fold(node)

    def close(self, survivors: Collection[int]) -> None:
        """End of the phase: fold the held-back vectors of `survivors`, discard the rest."""
        for node in list(self._pending):
            if node in survivors:
                self._fold(node)
        self._pending.clear()

    def _may_be_dropped(self, node: int) -> bool:
        neighbours = self._neighbours[node]
        return bool(
            neighbours & self._unreported
            or self.rejections.get(node)
            or any(node in self.rejections.get(other, ()) for other in neighbours)
        )

    def _fold(self, node: int) -> None:
        self.total += self._pending.pop(node)
        self.included.add(node)


def resolve_rejections(
    rejections: Mapping[int, Collection[int]], candidates: Collection[int]
) -> dict[int, list[int]]:
    """Whom to drop so that no failed pair has both sides in the sum: node -> its failed partners.

    A rejection says the pair (reporter, sender) failed, not which side is at fault. Greedily
    dropping the node in the most failed pairs (ties: the one rejected most, then the lowest id)
    blames a node with a bad public key (all its pairs fail), spares the neighbours of a node
    that rejects everyone, and otherwise blames the sender of an unreadable share.
    """
    pairs = {
        (reporter, sender)
        for reporter, rejected in rejections.items()
        for sender in rejected
        if reporter in candidates and sender in candidates
    }
    blamed: dict[int, list[int]] = {}
    while pairs:
        involved = Counter(node for pair in pairs for node in pair)
        rejected = Counter(sender for _, sender in pairs)
        worst = max(involved, key=lambda node: (involved[node], rejected[node], -node))
        blamed[worst] = sorted({a if b == worst else b for a, b in pairs if worst in (a, b)})
        pairs = {pair for pair in pairs if worst not in pair}
    return blamed


@dataclass(frozen=True)
class UnmaskPlan:
    """Who reveals which shares in the unmask phase, and which masks the server then removes.

    `requests[v]` = (owners of the seed shares v reveals, owners of the key shares v reveals);
    `mask_partners[u]` = the survivors that masked with dropped node u; `needed_keys` = the dropped
    nodes whose masking keys must be rebuilt (those with any such partner).
    """

    requests: dict[int, tuple[frozenset[int], frozenset[int]]]
    mask_partners: dict[int, frozenset[int]]
    needed_keys: frozenset[int]


def plan_unmask(
    senders: Mapping[int, frozenset[int]],
    rejections: Mapping[int, Collection[int]],
    survivors: frozenset[int],
    threshold: int,
) -> UnmaskPlan:
    """Ask each survivor only for what it holds and what is needed; abort (before anything is
    revealed) if some needed secret has fewer than `threshold` holders among the survivors.

    `senders[v]`: whose shares v received; `rejections[v]`: which of them v rejected (and so
    neither holds shares of nor masked with).
    """
    masked_with = {node: senders[node] - frozenset(rejections[node]) for node in survivors}
    mask_partners = {
        gone: frozenset(node for node in survivors if gone in masked_with[node])
        for gone in frozenset(senders) - survivors
    }
    needed_keys = frozenset(gone for gone, partners in mask_partners.items() if partners)
    requests = {
        node: ((masked_with[node] & survivors) | {node}, masked_with[node] & needed_keys)
        for node in survivors
    }
    holders: Counter[int] = Counter()
    for seeds, keys in requests.values():
        holders.update(seeds | keys)
    for owner in sorted(survivors | needed_keys):
        if holders[owner] < threshold:
            raise SecAggAbortedError(
                f"node {owner}'s secret has {holders[owner]} live holders, fewer than the "
                f"threshold {threshold}; the sum cannot be unmasked"
            )
    return UnmaskPlan(requests, mask_partners, needed_keys)


def recover_secret(
    shares: Sequence[shamir.Share], threshold: int, is_valid: Callable[[bytes], bool], owner: int
) -> tuple[bytes, list[int]]:
    """(secret, holders whose shares are wrong), checking the secret with `is_valid`.

    The first `threshold` shares are tried first. If their secret fails the check, random subsets
    are tried (up to `MAX_RECOVERY_ATTEMPTS`); once one passes, every share off its polynomial is
    reported. `SecAggAbortedError` if no subset passes.
    """
    if len(shares) < threshold:
        raise SecAggAbortedError(
            f"only {len(shares)} shares of node {owner}'s secret arrived, {threshold} are needed"
        )
    chooser = secrets.SystemRandom()
    attempts = 1 if len(shares) == threshold else MAX_RECOVERY_ATTEMPTS
    for attempt in range(attempts):
        subset = shares[:threshold] if attempt == 0 else chooser.sample(list(shares), threshold)
        try:
            secret = shamir.reconstruct(subset, threshold)
        except ShamirError:
            continue
        if is_valid(secret):
            if attempt == 0:
                return secret, []
            wrong = [s.index for s in shares if shamir.interpolate(subset, s.index) != s.value]
            return secret, wrong
    raise SecAggAbortedError(
        f"the shares of node {owner}'s secret do not rebuild it (too many wrong shares); the "
        "sum cannot be unmasked"
    )


def remove_masks(
    masked_total: np.ndarray,
    *,
    seeds: Mapping[int, bytes],
    dropped_keys: Mapping[int, bytes],
    dropped_neighbours: Mapping[int, Iterable[int]],
    masking_keys: Mapping[int, bytes],
    server_round: int,
    bits: int,
) -> np.ndarray:
    """Subtract survivors' self masks and the pairwise masks survivors share with dropped nodes.

    `seeds`: survivor -> self-mask seed; `dropped_keys`: dropped node -> its reconstructed masking
    private key; `dropped_neighbours[u]`: the survivors that masked with dropped node u.
    """
    total = masked_total.copy()
    for seed in seeds.values():
        total -= crypto.expand_mask(seed, total.size, bits)
    for dropped, raw_key in dropped_keys.items():
        private_key = crypto.load_private_key(raw_key)
        for survivor in dropped_neighbours[dropped]:
            seed = crypto.pairwise_seed(
                private_key, masking_keys[survivor], server_round, dropped, survivor
            )
            # The survivor applied the pair's mask with its own sign; adding it from the dropped
            # node's side is exactly its negation.
            crypto.add_pairwise_mask(total, seed, dropped, survivor, bits)
    if bits < 64:
        total &= np.uint64((1 << bits) - 1)
    return total
