"""`import flwr…` resolved to roost's compatibility layer, for the length of a run.

A Flower app's files say `from flwr.app import Message`; to run them unchanged, roost installs a
meta-path finder that maps `flwr` and every `flwr.X` to `roost.compat.flwr` and
`roost.compat.flwr.X` — the same module objects, so `flwr.app.Message is
roost.compat.flwr.app.Message`. Why a finder rather than a `flwr` package shipped with roost:
it exists only while an app runs (nothing named `flwr` is installed into the environment, so a
real Flower installation is never shadowed by accident), and when Flower *is* installed it takes
over only on explicit request (`replace_installed=True`), restoring Flower's modules afterwards.
A name the layer lacks fails at import with one line naming it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from roost.errors import ConfigurationError

ALIAS = "flwr"
TARGET = "roost.compat.flwr"


class UnsupportedFlowerModule(ModuleNotFoundError):
    """A `flwr.X` module that roost's compatibility layer does not provide."""


class FlowerAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `flwr` and `flwr.X` as roost's `roost.compat.flwr` and `roost.compat.flwr.X`."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real_name = TARGET + fullname[len(ALIAS) :]
        try:
            module = importlib.import_module(real_name)
        except ModuleNotFoundError as error:
            if error.name != real_name:
                raise
            raise UnsupportedFlowerModule(
                f"{fullname} is not supported by roost's Flower layer; it provides flwr.app, "
                "flwr.clientapp, flwr.clientapp.mod, flwr.serverapp, flwr.serverapp.strategy, "
                "flwr.client, flwr.client.mod, flwr.client.typing, flwr.common, "
                "flwr.common.config, flwr.common.logger, flwr.common.typing, flwr.server, "
                "flwr.server.strategy, flwr.server.workflow and flwr.simulation",
                name=fullname,
            ) from None
        is_package = "__path__" in vars(module)
        return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The alias *is* roost's module: identity keeps isinstance checks and module state shared.
        return sys.modules[TARGET + spec.name[len(ALIAS) :]]

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its roost name."""


_lock = threading.Lock()
_users = 0
_finder = FlowerAliasFinder()
_saved: dict[str, ModuleType] = {}


def flower_installed() -> bool:
    """Whether a real Flower package can be imported here (roost's alias aside)."""
    return importlib.machinery.PathFinder.find_spec(ALIAS) is not None


def install(*, replace_installed: bool = False) -> None:
    """Make `import flwr…` load roost's layer (until as many `uninstall()` calls).

    Raises `ConfigurationError` when Flower itself is installed, unless `replace_installed`.
    """
    global _users
    with _lock:
        if _users == 0:
            if flower_installed() and not replace_installed:
                raise ConfigurationError(
                    "Flower (flwr) is installed here, so `import flwr` would load Flower, not "
                    "roost; pass replace_installed_flwr=True (the CLI's --replace-flwr) to run the "
                    "app on roost's Flower layer, or run it in an environment without flwr"
                )
            for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
                _saved[name] = sys.modules.pop(name)
            sys.meta_path.insert(0, _finder)
        _users += 1


def uninstall() -> None:
    """Undo one `install()`; the last one removes the alias and brings back Flower's modules."""
    global _users
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users:
            return
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
            del sys.modules[name]
        sys.modules.update(_saved)
        _saved.clear()


@contextmanager
def flower_alias(*, replace_installed: bool = False) -> Iterator[None]:
    """`import flwr…` loads roost's compatibility layer inside the `with` block."""
    install(replace_installed=replace_installed)
    try:
        yield
    finally:
        uninstall()
