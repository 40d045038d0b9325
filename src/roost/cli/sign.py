"""`roost sign`: bundle a project and sign it as its publisher, for nodes that trust you.

    roost sign --new-key publisher.pem          # once: publisher.pem (secret) + publisher.pub
    roost sign my-project --key publisher.pem   # my-project.tar.gz + my-project.sig

A node runs a run's app only when the bundle is signed by a publisher whose public key (the .pub
file, or the `ed25519:...` line printed here) its operator listed in `trusted_publishers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from roost.cli.options import CommandParser
from roost.errors import ConfigurationError


def add_command(root: CommandParser) -> None:
    """Add `roost sign` to `root`."""
    parser = root.add_command("sign", __doc__)
    parser.add_argument(
        "project", metavar="DIR", nargs="?", default=None, help="the project directory to bundle"
    )
    parser.add_argument(
        "--key", metavar="KEY.pem", default=None, help="the publisher's private key to sign with"
    )
    parser.add_argument(
        "--new-key",
        metavar="KEY.pem",
        default=None,
        help="make a publisher key pair: KEY.pem (keep it secret) and KEY.pub (hand it out)",
    )
    parser.add_argument(
        "-o",
        "--out",
        metavar="BUNDLE.tar.gz",
        default=None,
        help="where to write the bundle (default: NAME.tar.gz here, NAME the directory's name);"
        " its signature goes beside it as NAME.sig",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Make a key pair, sign a bundle, or both (a new key then signs)."""
    from roost.federation.bundle import SignedBundle, make_bundle
    from roost.federation.keys import (
        fingerprint,
        generate_key_pair,
        load_private_key,
        public_key_line,
        public_key_path,
    )

    if args.new_key is None and args.project is None:
        raise ConfigurationError(
            "roost sign needs a project: roost sign DIR --key KEY.pem (or --new-key KEY.pem to "
            "make a publisher key pair)"
        )
    if args.new_key is not None:
        if args.key is not None:
            raise ConfigurationError("pass --key or --new-key, not both")
        key = generate_key_pair(args.new_key)
        print(f"wrote {args.new_key} (keep it secret) and {public_key_path(args.new_key)}")
        print(f"publisher key {fingerprint(key)}: {public_key_line(key)}")
    elif args.key is None:
        raise ConfigurationError(
            "roost sign DIR needs --key KEY.pem, the publisher's private key (make one with "
            "roost sign --new-key KEY.pem)"
        )
    else:
        key = load_private_key(args.key)
    if args.project is None:
        return 0
    project = Path(args.project)
    signed = SignedBundle.sign(make_bundle(project), key)
    out = Path(args.out) if args.out else Path(f"{project.resolve().name}.tar.gz")
    bundle_path, signature_path = signed.write(out)
    size = len(signed.data) / 1024
    print(f"wrote {bundle_path} ({size:.1f} KiB, sha256 {signed.sha256[:16]}) and {signature_path}")
    return 0
