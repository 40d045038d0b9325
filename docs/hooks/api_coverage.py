"""MkDocs hook: the built site documents every public name.

After the build, every name in the `__all__` of `roost` and of each public subpackage listed in
`PUBLIC_MODULES` must have an entry in the site's inventory (`objects.inv`, which mkdocstrings
writes for each object it renders); a missing one fails the build with the names to add.
"""

from __future__ import annotations

import importlib
import inspect
import zlib
from pathlib import Path
from typing import Any

PUBLIC_MODULES = (
    "roost",
    "roost.strategy",
    "roost.privacy",
    "roost.secagg",
    "roost.client",
    "roost.tasks",
    "roost.data",
    "roost.engines",
    "roost.server",
    "roost.transport",
    "roost.tracking",
    "roost.compat.flwr",
)
"""The modules whose `__all__` the API reference covers (docs/reference/api/)."""


class MissingReferenceError(Exception):
    """The site leaves out public names."""


def on_post_build(config: Any, **_: Any) -> None:
    """MkDocs' post-build event: fail the build when a public name has no entry."""
    missing = missing_names(read_inventory(Path(config["site_dir"]) / "objects.inv"))
    if missing:
        raise MissingReferenceError(
            f"the API reference leaves out {', '.join(missing)}: add a `::: module` block for them"
            " under docs/reference/api/"
        )


def read_inventory(path: Path) -> set[str]:
    """The object names of a Sphinx-format inventory (`objects.inv`, version 2)."""
    header, _, body = _split_header(path.read_bytes())
    if not header.startswith(b"# Sphinx inventory version 2"):
        raise MissingReferenceError(f"{path} is not a version 2 inventory")
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines() if line}


def _split_header(data: bytes) -> tuple[bytes, bytes, bytes]:
    lines = data.split(b"\n", 4)  # four comment lines, then the zlib-compressed entries
    return lines[0], b"\n".join(lines[1:4]), lines[4]


def missing_names(documented: set[str]) -> list[str]:
    """Every `module.name` of `PUBLIC_MODULES`' `__all__` that `documented` lacks, under that
    name or where it is defined (a name a module loads lazily is documented in its own module).
    Submodules listed in an `__all__` (the Flower layer's namespace) are namespaces, not names,
    and are left to their own pages."""
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue
            home = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
            if f"{module_name}.{name}" not in documented and home not in documented:
                missing.append(f"{module_name}.{name}")
    return missing
