"""A client's side of one secure-aggregation round: four phases, each answered once, in order.

The client checks every instruction before acting on it and raises `SecAggInstructionError` for
anything malformed or unsafe; above all it never reveals both the seed share and the key share of
one neighbour, and reveals nothing when fewer than `threshold` clients survived.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from roost.secagg import crypto, shamir
from roost.secagg.errors import (
    CryptoError,
    MessageFormatError,
    SecAggConfigError,
    SecAggInstructionError,
)
from roost.secagg.messages import (
    CIPHERTEXT_BYTES,
    AdvertiseKeysIns,
    AdvertiseKeysRes,
    MaskedInputIns,
    MaskedInputRes,
    ShareKeysIns,
    ShareKeysRes,
    UnmaskIns,
    UnmaskRes,
    WireMessage,
    masked_dtype,
)

_PHASES = ("advertise_keys", "share_keys", "masked_input", "unmask", "done")


@dataclass(frozen=True)
class _Neighbour:
    share_key: bytes  # AES-GCM key for shares between this client and the neighbour
    mask_seed: bytes  # seed of the pairwise mask


class SecAggClient:
    """One client in one round. Call the four phase methods in order, each once.

    Create a fresh object per round: keys, seeds and shares are never reused across rounds.

    The client checks the server's parameters on its own before it shares anything: with h
    holders of its secrets (its neighbours and itself) and threshold t it requires 2t > h, so that
    a server asking each holder once cannot collect t shares of both its secrets, whatever it
    claims about who dropped. It also refuses a threshold below `min_threshold` and fewer
    neighbours than `min_neighbours`: a small neighbourhood is easier to fill with colluders, so a
    data owner who expects large cohorts can raise them. The defaults accept every setting an
    honest server chooses by default (down to one neighbour and t = 2 for a cohort of two).
    """

    def __init__(self, *, min_threshold: int = 2, min_neighbours: int = 1) -> None:
        for name, value, low in (
            ("min_threshold", min_threshold, 2),
            ("min_neighbours", min_neighbours, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SecAggConfigError(f"{name} must be an int >= {low}, got {value!r}")
        self._min_threshold, self._min_neighbours = min_threshold, min_neighbours
        self.min_survivors = 0
        """Refuse to unmask a sum of fewer inputs (distributed DP sets it with its noise)."""
        self._phase = 0
        self._settings: AdvertiseKeysIns | None = None
        self._encryption_key = crypto.generate_private_key()
        self._masking_key = crypto.generate_private_key()
        self._seed = os.urandom(crypto.KEY_BYTES)
        self._neighbours: dict[int, _Neighbour] = {}
        # Share values this client holds, per owner: (key share, seed share).
        self._held: dict[int, tuple[shamir.Share, shamir.Share]] = {}

    def __getstate__(self) -> dict:
        """Picklable form (keys as raw bytes), so a simulation engine can carry a client's round
        state between its worker processes. Never sent over a network nor saved to disk."""
        state = dict(vars(self))
        state["_encryption_key"] = crypto.private_bytes(self._encryption_key)
        state["_masking_key"] = crypto.private_bytes(self._masking_key)
        return state

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._encryption_key = crypto.load_private_key(state["_encryption_key"])
        self._masking_key = crypto.load_private_key(state["_masking_key"])

    @property
    def node_id(self) -> int:
        """This client's node id in the round (known after `advertise_keys`)."""
        return self._round_settings().node_id

    def advertise_keys(self, ins: AdvertiseKeysIns) -> AdvertiseKeysRes:
        """Phase 1: remember the round's settings and return the two public keys."""
        self._enter("advertise_keys")
        if ins.threshold < self._min_threshold:
            raise SecAggInstructionError(
                f"threshold {ins.threshold} is below this client's min_threshold "
                f"{self._min_threshold}; the server must use a larger threshold"
            )
        self._settings = ins
        return AdvertiseKeysRes(
            crypto.public_bytes(self._encryption_key), crypto.public_bytes(self._masking_key)
        )

    def share_keys(self, ins: ShareKeysIns) -> ShareKeysRes:
        """Phase 2: Shamir-share the masking key and self-mask seed among neighbours and self."""
        self._enter("share_keys")
        settings = self._check_round(ins.server_round)
        me = settings.node_id
        ids = [int(i) for i in ins.neighbour_ids]
        if me in ids:
            raise SecAggInstructionError(f"node {me} was listed as its own neighbour")
        if len(ids) + 1 < settings.threshold:
            raise SecAggInstructionError(
                f"{len(ids)} neighbours and this client cannot hold shares with threshold "
                f"{settings.threshold}"
            )
        self._check_holders(len(ids), settings.threshold)
        for node, encryption, masking in zip(
            ids, ins.encryption_keys, ins.masking_keys, strict=True
        ):
            self._neighbours[node] = self._agree(node, encryption.tobytes(), masking.tobytes())
        holders = [*ids, me]
        key_shares = shamir.split(
            crypto.private_bytes(self._masking_key), settings.threshold, holders
        )
        seed_shares = shamir.split(self._seed, settings.threshold, holders)
        self._held[me] = (key_shares[-1], seed_shares[-1])
        ciphertexts = np.empty((len(ids), CIPHERTEXT_BYTES), dtype=np.uint8)
        for row, (node, key_share, seed_share) in enumerate(
            zip(ids, key_shares, seed_shares, strict=False)
        ):
            neighbour = self._neighbours[node]
            plaintext = (
                key_share.value_bytes()
                + seed_share.value_bytes()
                + crypto.confirm_seed(neighbour.mask_seed)
            )
            sealed = crypto.encrypt_share(
                neighbour.share_key,
                plaintext,
                server_round=settings.server_round,
                sender=me,
                receiver=node,
            )
            ciphertexts[row] = np.frombuffer(sealed, dtype=np.uint8)
        commitment = crypto.commit_seed(self._seed, settings.server_round, me)
        return ShareKeysRes(np.array(ids, dtype=np.int64), ciphertexts, commitment)

    def masked_input(self, ins: MaskedInputIns, quantized_input: np.ndarray) -> MaskedInputRes:
        """Phase 3: keep the shares received, return input + self mask ± pairwise masks.

        Senders whose shares fail authentication or key confirmation are rejected: no mask with
        them, and they are reported so that the server drops them (or this client).
        """
        self._enter("masked_input")
        settings = self._check_round(ins.server_round)
        vector = self._check_input(quantized_input)
        me = settings.node_id
        senders = [int(i) for i in ins.sender_ids]
        strangers = sorted(set(senders) - set(self._neighbours))
        if strangers:
            raise SecAggInstructionError(f"shares came from non-neighbours {strangers}")
        rejected = [
            node
            for node, sealed in zip(senders, ins.ciphertexts, strict=True)
            if not self._accept_share(node, sealed.tobytes())
        ]
        partners = sorted(set(senders) - set(rejected))
        if len(partners) + 1 < settings.threshold:
            # Too few pairwise masks to hide this input among others; the round cannot finish.
            raise SecAggInstructionError(
                f"only {len(partners)} neighbours sent valid shares; threshold {settings.threshold}"
                " needs more before this client sends its masked input"
            )
        masked = vector + crypto.expand_mask(self._seed, vector.size, settings.bits)
        for node in partners:
            crypto.add_pairwise_mask(
                masked, self._neighbours[node].mask_seed, me, node, settings.bits
            )
        if settings.bits < 64:
            masked &= np.uint64((1 << settings.bits) - 1)
        wire_vector = masked.astype(masked_dtype(settings.bits))
        return MaskedInputRes(wire_vector, np.array(rejected, dtype=np.int64))

    def unmask(self, ins: UnmaskIns) -> UnmaskRes:
        """Phase 4: seed shares of the survivors named, key shares of the dropped named."""
        self._enter("unmask")
        settings = self._check_round(ins.server_round)
        me = settings.node_id
        survivors = [int(i) for i in ins.survivor_ids]
        dropped = [int(i) for i in ins.dropped_ids]
        if ins.num_survivors < settings.threshold or len(survivors) > ins.num_survivors:
            raise SecAggInstructionError(
                f"only {ins.num_survivors} clients survived, fewer than the threshold "
                f"{settings.threshold}; revealing shares could expose an input"
            )
        if ins.num_survivors < self.min_survivors:
            # Distributed DP: the noise is calibrated for min_survivors clients; fewer would
            # unmask a sum with less noise than the privacy guarantee assumes.
            raise SecAggInstructionError(
                f"only {ins.num_survivors} clients survived, fewer than the {self.min_survivors} "
                "whose noise the distributed DP guarantee needs"
            )
        if me not in survivors or me in dropped:
            raise SecAggInstructionError("this client was not listed among the survivors")
        unknown = sorted(set(survivors + dropped) - set(self._held))
        if unknown:
            raise SecAggInstructionError(f"this client holds no shares of nodes {unknown}")
        return UnmaskRes(
            np.array(survivors, dtype=np.int64),
            _share_rows([self._held[node][1] for node in survivors]),
            np.array(dropped, dtype=np.int64),
            _share_rows([self._held[node][0] for node in dropped]),
        )

    def respond(
        self, arrays: list[np.ndarray], values: dict, quantized_input: np.ndarray | None = None
    ) -> WireMessage:
        """Answer a wire instruction of whichever phase is next, as a wire reply.

        `quantized_input` is needed by the masked-input phase only.
        """
        phase = _PHASES[self._phase]
        try:
            if phase == "advertise_keys":
                return self.advertise_keys(AdvertiseKeysIns.from_wire(arrays, values)).to_wire()
            if phase == "share_keys":
                return self.share_keys(ShareKeysIns.from_wire(arrays, values)).to_wire()
            if phase == "masked_input":
                if quantized_input is None:
                    raise SecAggInstructionError("the masked-input phase needs the quantized input")
                ins = MaskedInputIns.from_wire(arrays, values)
                return self.masked_input(ins, quantized_input).to_wire()
            if phase == "unmask":
                return self.unmask(UnmaskIns.from_wire(arrays, values)).to_wire()
        except MessageFormatError as error:
            raise SecAggInstructionError(f"malformed {phase} instruction: {error}") from error
        raise SecAggInstructionError("this round is over; create a new SecAggClient per round")

    def _check_holders(self, neighbours: int, threshold: int) -> None:
        """Refuse a neighbourhood too small, or too large for the threshold (2t > holders)."""
        if neighbours < self._min_neighbours:
            raise SecAggInstructionError(
                f"the server named {neighbours} neighbours, fewer than this client's "
                f"min_neighbours {self._min_neighbours}; the round needs a larger neighbourhood"
            )
        holders = neighbours + 1
        if 2 * threshold <= holders:
            raise SecAggInstructionError(
                f"threshold {threshold} is not above half of this client's {holders} share "
                f"holders: a server could collect both of its secrets and learn its input; "
                f"the threshold must be at least {holders // 2 + 1}"
            )

    def _agree(self, node: int, encryption_key: bytes, masking_key: bytes) -> _Neighbour:
        """Derive the share key and the pairwise mask seed with one neighbour's public keys."""
        settings = self._round_settings()
        try:
            return _Neighbour(
                crypto.share_encryption_key(
                    self._encryption_key,
                    encryption_key,
                    settings.server_round,
                    settings.node_id,
                    node,
                ),
                crypto.pairwise_seed(
                    self._masking_key, masking_key, settings.server_round, settings.node_id, node
                ),
            )
        except CryptoError as error:
            raise SecAggInstructionError(f"neighbour {node}'s public key: {error}") from error

    def _accept_share(self, sender: int, sealed: bytes) -> bool:
        settings = self._round_settings()
        me = settings.node_id
        try:
            plaintext = crypto.decrypt_share(
                self._neighbours[sender].share_key,
                sealed,
                server_round=settings.server_round,
                sender=sender,
                receiver=me,
            )
            size = shamir.SHARE_VALUE_BYTES
            shares = (
                shamir.Share.from_bytes(me, plaintext[:size]),
                shamir.Share.from_bytes(me, plaintext[size : 2 * size]),
            )
        except (CryptoError, shamir.ShamirError):
            return False
        if plaintext[2 * size :] != crypto.confirm_seed(self._neighbours[sender].mask_seed):
            return False
        self._held[sender] = shares
        return True

    def _check_input(self, quantized_input: np.ndarray) -> np.ndarray:
        settings = self._round_settings()
        vector = np.asarray(quantized_input)
        if vector.dtype != np.uint64 or vector.shape != (settings.vector_length,):
            raise SecAggInstructionError(
                f"the quantized input must be a uint64 vector of length {settings.vector_length}, "
                f"got {vector.dtype} {vector.shape}; use roost.secagg.Quantizer"
            )
        if vector.size and int(vector.max()) >> settings.bits:
            raise SecAggInstructionError(f"the quantized input has values >= 2^{settings.bits}")
        return vector.copy()

    def _enter(self, phase: str) -> None:
        expected = _PHASES[self._phase]
        if phase != expected:
            raise SecAggInstructionError(f"got a {phase} instruction, expected {expected}")
        self._phase += 1

    def _check_round(self, server_round: int) -> AdvertiseKeysIns:
        settings = self._round_settings()
        if server_round != settings.server_round:
            raise SecAggInstructionError(
                f"instruction for round {server_round} in round {settings.server_round}"
            )
        return settings

    def _round_settings(self) -> AdvertiseKeysIns:
        if self._settings is None:
            raise SecAggInstructionError("the round has not started (no advertise_keys yet)")
        return self._settings


def _share_rows(shares: list[shamir.Share]) -> np.ndarray:
    rows = np.empty((len(shares), shamir.SHARE_VALUE_BYTES), dtype=np.uint8)
    for row, share in enumerate(shares):
        rows[row] = np.frombuffer(share.value_bytes(), dtype=np.uint8)
    return rows
