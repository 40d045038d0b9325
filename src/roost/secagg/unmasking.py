"""Server-side arithmetic of the last two phases: summing masked vectors and removing masks.

`MaskedSum` keeps a running sum of masked vectors (memory O(vector), not O(clients × vector)). A
vector is held back only while a neighbour of its sender could still report that the sender's
encrypted shares failed authentication, since such a sender is then treated as dropped and its
vector must stay out of the sum.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from roost.secagg import crypto, shamir
from roost.secagg.errors import SecAggAbortedError, ShamirError

# How many subsets of shares to try when the first `threshold` shares do not rebuild a secret
# that matches its public key or commitment (someone sent a wrong share).
MAX_RECOVERY_ATTEMPTS = 2000


class MaskedSum:
    """The modular sum of the masked vectors of the clients that may still be in the sum.

    `share_receivers[u]` are the nodes that received u's encrypted shares, i.e. the nodes that
    might still reject them.
    """

    def __init__(self, length: int, share_receivers: Mapping[int, Iterable[int]]) -> None:
        self.total = np.zeros(length, dtype=np.uint64)
        self.included: set[int] = set()
        self.rejected_by: dict[int, int] = {}  # sender -> first node that rejected its shares
        self._pending: dict[int, np.ndarray] = {}
        self._waiting_on = {node: set(receivers) for node, receivers in share_receivers.items()}

    def add(self, node: int, masked: np.ndarray, rejected_senders: Iterable[int]) -> None:
        """Take `node`'s masked vector and the senders whose shares it could not decrypt."""
        for sender in rejected_senders:
            self.rejected_by.setdefault(sender, node)
            self._pending.pop(sender, None)
        self._pending[node] = masked
        self.settle(node)

    def settle(self, reporter: int) -> None:
        """`reporter` has answered or dropped: it can no longer reject anyone's shares."""
        for node, waiting in self._waiting_on.items():
            if reporter in waiting:
                waiting.discard(reporter)
                self._fold_if_final(node)
        self._fold_if_final(reporter)

    def close(self) -> None:
        """End of the phase: nobody can reject anything any more; fold what is still held back."""
        for node in list(self._pending):
            self._waiting_on[node] = set()
            self._fold_if_final(node)

    def _fold_if_final(self, node: int) -> None:
        if (
            node in self._pending
            and not self._waiting_on.get(node)
            and node not in self.rejected_by
        ):
            self.total += self._pending.pop(node)
            self.included.add(node)


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
