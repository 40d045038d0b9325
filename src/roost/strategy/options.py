"""Named strategies declare their own options once, as `Option` records; the rest is derived.

A preset (FedAdam, Krum, ...) is a `NamedStrategy` whose class lists its parameters in `options`:
name, type, default, help text, bounds and the command-line flag that sets it. From that one
declaration come

- the preset's keyword arguments, their checks and the attributes that keep them;
- its signature (`inspect.signature(FedAdam)`) and the "Args" section of its docstring;
- the `roost simulate --strategy NAME` flags and their validation (`roost.cli.strategy_options`);
- the Flower-compatible classes (`roost.compat.flwr.server.strategy`).

A preset builds the parts it fixes from its options in `preset_parts` and the entries it adds to
every fit config in `preset_fit_config`; every other `Strategy` argument passes through, so
`FedAdam(aggregator=TrimmedMean(0.2))` is trimmed mean + server Adam with no new class.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

from roost.core.types import Config
from roost.errors import ConfigurationError
from roost.strategy.aggregators import WeightedMean
from roost.strategy.optimizers import ServerSGD
from roost.strategy.strategy import Strategy
from roost.strategy.weighting import weight_by_num_examples


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The `default` of an option that has none: the caller must give it."""

STRATEGY_PARTS = (
    "aggregator",
    "weight_fn",
    "server_optimizer",
    "update_transforms",
    "sampler",
    "update_fn",
    "secure_aggregation",
    "compression",
)
"""`Strategy` arguments that are parts (a preset may fix them); the others are knobs."""

STRATEGY_KNOBS = tuple(
    name
    for name in inspect.signature(Strategy.__init__).parameters
    if name != "self" and name not in STRATEGY_PARTS
)
"""The FedAvg knobs every preset accepts (fractions, minimums, functions, ...)."""

_NAMES = {int: "an int", float: "a number", str: "a string", bool: "true or false"}


class MissingOptionError(ConfigurationError, TypeError):
    """A preset was built without an option it requires (a TypeError too, as Python's own)."""


@dataclass(frozen=True)
class Option:
    """One parameter of a named strategy.

    Args:
        name: the keyword argument, and the attribute that keeps the value.
        type: int, float, str or bool; a float option also takes an int.
        default: the value when none is given; `REQUIRED` when the caller must give one.
        help: what it sets, in a few words (docstrings and `--help` show it).
        flag: the command-line flag that sets it (e.g. "--server-lr"; several presets may share
            one); None keeps it off the command line.
        at_least: the smallest value accepted.
        above: values must be greater than this.
        mirrors: the run-wide setting this option restates ("learning_rate": the clients' learning
            rate); a command line fills it in from that setting.
    """

    name: str
    type: type
    default: Any = REQUIRED
    help: str = ""
    flag: str | None = None
    at_least: float | None = None
    above: float | None = None
    mirrors: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _NAMES:
            raise TypeError(f"Option {self.name!r}: type must be int, float, str or bool")
        if self.flag is not None and (self.type is bool or not self.flag.startswith("--")):
            raise TypeError(f"Option {self.name!r}: a flag starts with '--' and sets no bool")

    @property
    def required(self) -> bool:
        """Whether the caller must give this option."""
        return self.default is REQUIRED

    def check(self, value: Any, owner: str) -> Any:
        """`value` as this option keeps it; ConfigurationError naming `owner` if it is refused."""
        if value is None and self.default is None:
            return None
        if not self._has_type(value):
            raise ConfigurationError(
                f"{owner} {self.name} must be {_NAMES[self.type]}, got {value!r}"
            )
        if problem := self._out_of_bounds(value):
            raise ConfigurationError(f"{owner} {self.name} {problem}")
        return float(value) if self.type is float else value

    def parse(self, text: str) -> Any:
        """The value of `text` (as a command line gives it); ConfigurationError saying why not."""
        try:
            value = self.type(text)
        except ValueError:
            raise ConfigurationError(f"expected {_NAMES[self.type]}, got {text!r}") from None
        if problem := self._out_of_bounds(value):
            raise ConfigurationError(problem)
        return value

    def _out_of_bounds(self, value: Any) -> str | None:
        if self.at_least is not None and not value >= self.at_least:
            return f"must be >= {self.at_least:g}, got {value}"
        if self.above is not None and not value > self.above:
            return f"must be > {self.above:g}, got {value}"
        return None

    def describe(self) -> str:
        """The help text with the default, as docstrings show it."""
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.help} ({default})"

    def _has_type(self, value: Any) -> bool:
        if isinstance(value, bool) or self.type is bool:
            return isinstance(value, bool) and self.type is bool
        if self.type is int:
            return isinstance(value, numbers.Integral)
        if self.type is float:
            return isinstance(value, numbers.Real)
        return isinstance(value, str)


class NamedStrategy(Strategy):
    """A `Strategy` preset: some parts fixed from declared `options`, every other argument open.

    Subclasses set `options` and override `preset_parts` / `preset_fit_config`. Passing the part
    a preset fixes (for example `server_optimizer` to `FedAdam`) is an error: use `Strategy(...)`.
    """

    options: ClassVar[tuple[Option, ...]] = ()
    """This preset's own parameters (see `Option`)."""

    mean_aggregation: ClassVar[bool] = True
    """Whether the aggregate is a mean of the updates, so central DP's noisy mean can replace it
    (False for medians, trimmed means, Krum, ...)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = [option.name for option in cls.options]
        taken = set(names) & set(inspect.signature(Strategy.__init__).parameters)
        if len(set(names)) != len(names) or taken:
            raise TypeError(f"{cls.__name__}.options repeat a name or a Strategy argument")
        cls.__signature__ = preset_signature(cls)  # type: ignore[attr-defined]
        cls.__doc__ = _with_args_section(cls)

    def __init__(self, **kwargs: Any) -> None:
        name = type(self).__name__
        missing = [o for o in self.options if o.required and o.name not in kwargs]
        if missing:
            raise MissingOptionError(
                f"{name} needs {', '.join(o.name for o in missing)} "
                f"({'; '.join(o.help for o in missing)})"
            )
        for option in self.options:
            value = kwargs.pop(option.name, option.default)
            setattr(self, option.name, option.check(value, name))
        parts = self.preset_parts(kwargs)
        if taken := [part for part in parts if part in kwargs]:
            raise ConfigurationError(
                f"{name} sets {', '.join(taken)} itself; build a roost.Strategy(...) to choose "
                "your own, or pick another preset"
            )
        kwargs.setdefault("aggregator", WeightedMean())
        kwargs.setdefault("weight_fn", weight_by_num_examples)
        kwargs.setdefault("server_optimizer", ServerSGD())
        super().__init__(**{**kwargs, **parts})
        self.fit_config_defaults = {**self.fit_config_defaults, **self.preset_fit_config()}

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """The parts this preset builds from its options (`knobs`: the other arguments, which
        a preset may adjust, e.g. raise minimums its aggregator needs)."""
        return {}

    def preset_fit_config(self) -> Config:
        """Entries added to every fit config (what `on_fit_config_fn` sends wins)."""
        return {}

    def option_values(self) -> dict[str, Any]:
        """This preset's options and their values."""
        return {option.name: vars(self)[option.name] for option in self.options}


def preset_signature(cls: type[NamedStrategy]) -> inspect.Signature:
    """The keyword-only signature of `cls(...)`: its options, then `Strategy`'s arguments."""
    own = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if option.required else option.default,
            annotation=option.type.__name__ + ("" if option.default is not None else " | None"),
        )
        for option in cls.options
    ]
    strategy = list(inspect.signature(Strategy.__init__).parameters.values())[1:]
    return inspect.Signature([*own, *strategy])


def _with_args_section(cls: type[NamedStrategy]) -> str:
    """The class docstring (its own, without a generated section) plus "Args:" from `options`."""
    text = (cls.__dict__.get("__doc__") or "").split("\n\n    Args:\n", 1)[0].rstrip()
    if not cls.options:
        return text
    lines = [f"        {option.name}: {option.describe()}." for option in cls.options]
    lines.append(
        "        **kwargs: every `Strategy` knob, and every part this preset does not set itself."
    )
    return text + "\n\n    Args:\n" + "\n".join(lines) + "\n    "


PRESETS: dict[str, type[NamedStrategy]] = {}
"""Every named preset by lower-case name, as `roost simulate --strategy NAME` knows them. Empty
here, filled on import: `roost.strategy.presets` registers its own, `roost.privacy` adds
`DPFedAvg` from the layer above."""


def register_preset(cls: type[NamedStrategy]) -> type[NamedStrategy]:
    """Add a named strategy to `PRESETS` (usable as a decorator), so that `--strategy NAME`,
    `preset(NAME)` and `roost.strategy.NAME` know it, also from a layer this one does not import."""
    key = cls.__name__.lower()
    if PRESETS.get(key, cls) is not cls:
        raise ConfigurationError(
            f"a preset named {key!r} is already registered ({PRESETS[key].__qualname__}); "
            "give your strategy class another name"
        )
    PRESETS[key] = cls
    return cls


def preset(name: str, *, like: Strategy | None = None, **options: Any) -> NamedStrategy:
    """Build the preset called `name` (any case, e.g. "FedAdam" or "fedadam").

    Args:
        name: a key of `PRESETS`.
        like: copy the FedAvg knobs (`STRATEGY_KNOBS`) from this strategy, e.g. an app's FedAvg.
        **options: the preset's own parameters and any `Strategy` knob; they win over `like`.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in PRESETS:
        raise ConfigurationError(
            f"unknown strategy {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
        )
    kwargs = {knob: vars(like)[knob] for knob in STRATEGY_KNOBS} if like is not None else {}
    kwargs.update(options)
    return PRESETS[key](**kwargs)
