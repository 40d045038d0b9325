"""Regenerate `roost_pb2.py` / `roost_pb2.pyi` from `roost.proto` (needs `grpcio-tools`).

    python -m roost.transport.grpc.generate

The generated files are committed, so installing or running roost never needs a protobuf compiler.
The gRPC service is registered by hand with raw-bytes handlers (see `server.py`), so that nothing a
client sends is parsed before it is authenticated; no `_pb2_grpc.py` servicer is generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = HERE.parents[2]  # the directory holding the `roost` package
PROTO = HERE.relative_to(SOURCE_ROOT) / "roost.proto"


def main() -> int:
    try:
        from grpc_tools import protoc
    except ImportError:
        print("install grpcio-tools first: pip install grpcio-tools", file=sys.stderr)
        return 1
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{SOURCE_ROOT}",
            f"--python_out={SOURCE_ROOT}",
            f"--pyi_out={SOURCE_ROOT}",
            str(PROTO),
        ]
    )
    if status != 0:
        return status
    for suffix in (".py", ".pyi"):
        path = HERE / f"roost_pb2{suffix}"
        # Generated code follows protoc's style, not ours.
        path.write_text("# ruff: noqa\n" + path.read_text())
    print(f"regenerated {HERE / 'roost_pb2.py'} and .pyi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
