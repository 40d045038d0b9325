"""`--compress CODEC`: clients send compressed updates, for `roost simulate | server`.

Clients need no flag: the server's fit instructions name the codec, and any roost client
encodes its update with it (`roost.client.compression`).
"""

from __future__ import annotations

import argparse

import numpy as np

from roost.core.codecs import SPEC_FORMS, Codec
from roost.core.compression import model_dtype
from roost.strategy.strategy import Strategy


def _codec(text: str) -> Codec:
    try:
        return Codec.parse(text)
    except Exception as error:  # argparse shows an ArgumentTypeError's message as it is
        raise argparse.ArgumentTypeError(str(error)) from None


def add_compression_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--compress`."""
    group = parser.add_argument_group(
        "compression", "clients send their updates compressed; the server decodes them"
    )
    group.add_argument(
        "--compress",
        type=_codec,
        default=None,
        metavar="CODEC",
        help=f"compress every client update: {SPEC_FORMS}; qB: stochastic B-bit quantization, "
        "rot-: a random rotation first, topk:F: the largest share F with error feedback "
        "(default: uncompressed)",
    )


def compression(args: argparse.Namespace) -> Codec | None:
    """The codec `--compress` names (None without it)."""
    return getattr(args, "compress", None)


def compression_line(strategy: Strategy) -> str | None:
    """The line saying how a run's updates are compressed, and what a client then sends
    (None without compression)."""
    codec = strategy.compression
    if codec is None:
        return None
    model = strategy.initial_parameters
    if model is None:
        return f"compression: {codec.name}; every round records bytes_up and bytes_down"
    size = sum(int(np.size(array)) for array in model)
    sent = codec.payload_bytes(size, model_dtype(model))
    plain = sum(int(array.nbytes) for array in model)
    return (
        f"compression: {codec.name}: each client sends {sent:,} bytes per round instead of "
        f"{plain:,} ({plain / sent:.1f}× less); every round records bytes_up and bytes_down"
    )
