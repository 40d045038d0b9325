"""`roost run DIR --federation NAME`: bundle the project, sign it, submit it as a run.

    roost run . --federation prod --sign-key publisher.pem --run-config num-rounds=5

Without --sign-key the bundle goes unsigned, and nodes that run signed bundles only (all but
development ones) refuse it; `roost ls` shows why.
"""

from __future__ import annotations

import argparse

from roost.cli.federations import add_connection_options, federation_from_args
from roost.cli.options import positive_int


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    """The options of `roost run` that submit to a federation instead of simulating."""
    group = parser.add_argument_group("submit to a federation instead of simulating")
    add_connection_options(group)
    group.add_argument(
        "--sign-key", metavar="KEY.pem", default=None, help="sign the bundle with this key"
    )
    group.add_argument(
        "--nodes",
        type=positive_int,
        default=None,
        help="how many nodes the run needs (default: every node online when it starts)",
    )


def submits(args: argparse.Namespace) -> bool:
    """Whether `roost run` was asked to submit rather than simulate."""
    return bool(args.federation or args.coordinator)


LOCAL_ONLY = {
    "out": "--out (pull the results with `roost pull RUN --out DIR`)",
    "state": "--state (the coordinator keeps every run's checkpoints)",
    "resume": "--resume (the coordinator resumes its runs itself)",
    "engine": "--engine (each node runs its client in a process of its own)",
    "clients": "--clients (pass --nodes K)",
    "dashboard": "--dashboard (the coordinator serves every run's: roost coordinator --dashboard)",
}
"""Options of `roost run` that only a simulation on this machine uses, and what to do instead."""


def submit(args: argparse.Namespace) -> int:
    """Bundle, sign and submit `args.directory`; print the run id."""
    from roost.errors import ConfigurationError
    from roost.federation.bundle import SignedBundle, make_bundle
    from roost.federation.keys import load_private_key, public_key_line

    given = [why for name, why in LOCAL_ONLY.items() if getattr(args, name, None)]
    if given:
        raise ConfigurationError(
            f"{given[0].split(' ', 1)[0]} is for a simulation on this machine, not a federation "
            f"run: drop it {given[0].split(' ', 1)[1]}"
        )
    federation = federation_from_args(args, args.directory)
    bundle = make_bundle(args.directory)
    signature = publisher = None
    if args.sign_key:
        key = load_private_key(args.sign_key)
        signature, publisher = SignedBundle.sign(bundle, key).signature, public_key_line(key)
    run_id = federation.client().submit(
        bundle,
        signature,
        publisher,
        federation=args.federation or "default",
        run_config=list(args.run_config or ()),
        nodes=args.nodes,
    )
    print(f"submitted run {run_id} to {federation.url}")
    print(f"follow it with: roost log {run_id} --follow{_where(args)}")
    return 0


def _where(args: argparse.Namespace) -> str:
    return f" --federation {args.federation}" if args.federation else " --coordinator URL"
