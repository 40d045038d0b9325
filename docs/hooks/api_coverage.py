"""MkDocs hook: the built site documents every public name.

After the build, every name in the `__all__` of `roost` and of each public subpackage listed in
`PUBLIC_MODULES` must have an entry in the site's inventory (`objects.inv`, which mkdocstrings
writes for each object it renders); a missing one fails the build with the names to add. So
does a public name without a docstring, and a private name the API pages show (a private base
class, an attribute's value), which a reader could neither look up nor use.
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
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
    """MkDocs' post-build event: fail the build when a public name has no entry, or an entry
    without a docstring (the reference would show a bare name, or its source's noise)."""
    missing = missing_names(read_inventory(Path(config["site_dir"]) / "objects.inv"))
    if missing:
        raise MissingReferenceError(
            f"the API reference leaves out {', '.join(missing)}: give each a docstring (a name"
            " without one is not rendered), and its module a `::: module` block under"
            " docs/reference/api/"
        )
    site = Path(config["site_dir"])
    shown = {
        page.parent.name: private_names(page.read_text(encoding="utf-8"))
        for page in sorted((site / "reference/api").glob("*/index.html"))
    }
    shown = {page: names for page, names in shown.items() if names}
    if shown:
        raise MissingReferenceError(
            f"the API reference shows private names ({shown}): document or rename them, or hide"
            " what shows them (a base class, an attribute's value)"
        )
    bare = undocumented_names(Path(config["config_file_path"]).parent / "src")
    if bare:
        raise MissingReferenceError(
            f"{', '.join(bare)} ha{'ve' if len(bare) > 1 else 's'} no docstring: write one where"
            " it is defined (a string on the line after a module-level alias)"
        )


def undocumented_names(src: Path) -> list[str]:
    """Every `module.name` of `PUBLIC_MODULES`' `__all__` whose definition has no docstring, read
    from the sources under `src` with griffe, as mkdocstrings reads them (a type alias documents
    itself with a string on the line after it)."""
    import griffe  # mkdocstrings' own reader: there at build time, where the hook runs

    loader = griffe.GriffeLoader(search_paths=[str(src)])
    package = loader.load("roost")  # its subpackages with it: loading each again costs seconds
    loader.resolve_aliases(implicit=False, external=False)
    bare = []
    for module_name in PUBLIC_MODULES:
        module = package if module_name == "roost" else package[module_name.removeprefix("roost.")]
        for name in getattr(importlib.import_module(module_name), "__all__", ()):
            try:
                found = module[name]
                target = found.final_target if found.is_alias else found
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue  # loaded lazily (a module `__getattr__`): missing_names covers it
            if not target.is_module and not target.docstring:
                bare.append(f"{module_name}.{name}")
    return bare


def private_names(page: str) -> list[str]:
    """The private names (`_Buffering`, not `__init__`) in the text of a rendered API page's
    article: what a reader could neither look up nor use."""
    article = page[page.find("<article") : page.find("</article>")]
    text = html.unescape(re.sub(r"<[^>]+>", "", article))
    return sorted(set(re.findall(r"(?<![\w.])_[A-Za-z]\w*", text)))


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
