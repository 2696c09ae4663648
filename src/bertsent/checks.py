"""Argument checks: the one place that says what a setting's value must be, and how a setting is named as a flag.

As scikit-learn's `_param_validation` (`Interval`, `StrOptions`, `_parameter_constraints`): a constraint is a
small object, `Whole(least)`, `Number(low, high, closed=...)`, `Choice(options)` or `Switch()`, and a table
{setting: constraint} is a class's rules in one place (`TrainConfig`'s `CONSTRAINTS`). `whole()`, `number()`,
`choice()` and `switch()` check one value where a table would be too much. Each returns the value (an int, a
number) or raises one line naming the setting by its flag (`--epochs 0: must be at least 1.`), for Python
callers too: the command line passes values on as given, so both are refused in the same words.

- A whole number is an int (numpy's too), never a bool; a number is finite (NaN and infinities refused).
- `parse=True` also takes text, as a command line gives it: "3", "2e-5".
- `rule=` replaces the default words after `--flag value:` (where a caller's message says more);
  `error=` makes the exception from the message: another class (`DataError`), or a function (a server's
  `lambda message: RequestError(422, "validation", message)`);
  `named=` names the setting otherwise than by its flag (a JSON request's key).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from bertsent.errors import BertsentError

CLOSED = ("both", "left", "right", "neither")  # which ends of a Number's interval are allowed, as sklearn's


def flag(name: str) -> str:
    """A setting's command-line flag: max_length -> --max-length (the only place that spells it)."""
    return "--" + name.replace("_", "-")


def negated(name: str) -> str:
    """The flag that turns an on/off setting off: packing -> --no-packing (argparse's BooleanOptionalAction)."""
    return "--no-" + name.replace("_", "-")


def whole(
    name: str,
    value,
    least: int | None = None,
    most: int | None = None,
    *,
    auto: bool = False,
    unit: str = "",
    parse: bool = False,
    rule: str | None = None,
    error: Callable[[str], Exception] = BertsentError,
    named: str | None = None,
):
    """`value` as an int in [least, most] (either end None: open), or "auto" where `auto`. `unit` says what is
    counted in the message ("of tokens")."""
    if auto and value == "auto":
        return value
    if parse and isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)  # ASCII digits only: "²" is a digit to str.isdigit, not to int()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        said = f"give a whole number{f' {unit}' if unit else ''}{' or ' + repr('auto') if auto else ''}"
        _refuse(name, value, rule or said, error, named)
    count = int(value)  # numpy's too
    if least is not None and count < least:
        _refuse(name, value, rule or f"must be at least {least}", error, named)
    if most is not None and count > most:
        _refuse(name, value, rule or f"must be at most {most}", error, named)
    return count


def number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    closed: str = "both",
    parse: bool = False,
    rule: str | None = None,
    error: Callable[[str], Exception] = BertsentError,
    named: str | None = None,
):
    """`value` as a finite number within low..high, whose ends `closed` says are allowed ("both", "left",
    "right", "neither"; an end that is None is open)."""
    if closed not in CLOSED:
        raise ValueError(f"closed={closed!r}: one of {', '.join(CLOSED)}")
    if parse and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            _refuse(name, value, rule or "give a number", error, named)
    said = rule or _interval(low, high, closed)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _refuse(name, value, said, error, named)
    x, left, right = float(value), closed in ("both", "left"), closed in ("both", "right")
    if low is not None and (x < low or (x == low and not left)):
        _refuse(name, value, said, error, named)
    if high is not None and (x > high or (x == high and not right)):
        _refuse(name, value, said, error, named)
    return value


def choice(
    name: str,
    value,
    options,
    *,
    what: str = "value",
    rule: str | None = None,
    error: Callable[[str], Exception] = BertsentError,
    named: str | None = None,
):
    """`value`, one of `options` (as given: a list of names); `what` the message calls an unknown one."""
    if value not in options:
        _refuse(name, value, rule or f"unknown {what}. Use one of {', '.join(map(str, options))}", error, named)
    return value


def switch(name: str, value, *, error: Callable[[str], Exception] = BertsentError, named: str | None = None) -> bool:
    """`value`, True or False (an on/off setting: `--packing` / `--no-packing`)."""
    if not isinstance(value, bool):
        _refuse(name, repr(value), "give True or False", error, named)
    return value


def _interval(low, high, closed: str) -> str:
    """The words for a Number's interval: "must be in [0, 1)", "must be above 0", "must be 0 or more"."""
    left, right = closed in ("both", "left"), closed in ("both", "right")
    if low is not None and high is not None:
        return f"must be in {'[' if left else '('}{low:g}, {high:g}{']' if right else ')'}"
    if low is not None:
        return f"must be {low:g} or more" if left else f"must be above {low:g}"
    if high is not None:
        return f"must be {high:g} or less" if right else f"must be below {high:g}"
    return "give a number"


def _refuse(name: str, value, rule: str, error: Callable[[str], Exception], named: str | None) -> NoReturn:
    raise error(f"{named or flag(name)} {value}: {rule.rstrip('.')}.")


# -- constraints: a setting's rule as a value, for tables ({setting: constraint}) and generated flags --


@dataclass(frozen=True)
class Whole:
    """A whole number of at least `least` (and at most `most`); "auto" too where `auto`."""

    least: int | None = None
    most: int | None = None
    auto: bool = False
    unit: str = ""

    def check(self, name: str, value, **how):
        return whole(name, value, self.least, self.most, auto=self.auto, unit=self.unit, **how)

    @property
    def rule(self) -> str:
        """The words for a whole number out of range, as `whole()` says them."""
        if self.least is not None and self.most is not None:
            return f"must be from {self.least} to {self.most}"
        return f"must be at least {self.least}" if self.most is None else f"must be at most {self.most}"

    @property
    def metavar(self) -> str:
        return "N|auto" if self.auto else "N"


@dataclass(frozen=True)
class Number:
    """A finite number between `low` and `high`, its ends allowed as `closed` says."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def check(self, name: str, value, **how):
        return number(name, value, self.low, self.high, closed=self.closed, **how)

    @property
    def rule(self) -> str:
        """The words for a number out of range, as `number()` says them."""
        return _interval(self.low, self.high, self.closed)

    metavar = "X"


@dataclass(frozen=True)
class Choice:
    """One of `options`; `what` names an unknown one in the message ("unknown recipe")."""

    options: tuple
    what: str = "value"

    def check(self, name: str, value, parse: bool = False, **how):
        return choice(name, value, self.options, what=self.what, **how)

    @property
    def metavar(self) -> str:
        return "|".join(map(str, self.options))


@dataclass(frozen=True)
class Switch:
    """True or False: on the command line `--name` and `--no-name`."""

    def check(self, name: str, value, parse: bool = False, **how):
        return switch(name, value, **how)

    metavar = None


Constraint = Whole | Number | Choice | Switch  # a value of a {setting: constraint} table
