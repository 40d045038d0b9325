"""Regenerate `roost_pb2.py` / `roost_pb2.pyi` from `roost.proto` (needs `grpcio-tools`).

    python tools/generate_grpc.py

The generated files are committed, so installing or running roost never needs a protobuf compiler.
The gRPC service is registered by hand with raw-bytes handlers (see
`roost/transport/grpc/listener.py`), so that nothing a client sends is parsed before it is
authenticated; no `_pb2_grpc.py` servicer is generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"  # the directory holding `roost`
PACKAGE_DIR = SOURCE_ROOT / "roost" / "transport" / "grpc"
# Relative to SOURCE_ROOT: protoc records this path in the generated descriptor.
PROTO = PACKAGE_DIR.relative_to(SOURCE_ROOT) / "roost.proto"


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
            PROTO.as_posix(),
        ]
    )
    if status != 0:
        return status
    for suffix in (".py", ".pyi"):
        path = PACKAGE_DIR / f"roost_pb2{suffix}"
        # Generated code follows protoc's style, not ours.
        path.write_text("# ruff: noqa\n" + path.read_text())
    print(f"regenerated {PACKAGE_DIR / 'roost_pb2.py'} and .pyi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
