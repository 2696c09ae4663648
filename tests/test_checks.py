"""bertsent.checks: each constraint accepts what it should and refuses the rest in one line naming the flag."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertsent.checks import Choice, Number, Switch, Whole, choice, flag, negated, number, switch, whole
from bertsent.errors import BertsentError, DataError


def test_flag_spells_a_setting_as_the_command_line_does():
    assert flag("max_length") == "--max-length" and flag("lr") == "--lr"
    assert negated("pad_to_max_length") == "--no-pad-to-max-length"


@pytest.mark.parametrize("value", [1, 7, np.int64(3), 2**40])
def test_whole_accepts_whole_numbers_from_the_least_up(value):
    assert whole("epochs", value, 1) == value and type(whole("epochs", value, 1)) is int


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "--epochs 0: must be at least 1."),
        (-3, "--epochs -3: must be at least 1."),
        (True, "--epochs True: give a whole number."),  # a bool is an int to Python, not a count to a user
        (False, "--epochs False: give a whole number."),
        (2.0, "--epochs 2.0: give a whole number."),
        (float("nan"), "--epochs nan: give a whole number."),
        ("3", "--epochs 3: give a whole number."),  # text only where parse=True (a command line's)
        (None, "--epochs None: give a whole number."),
        (9, "--epochs 9: must be at most 8."),
    ],
)
def test_whole_refuses_anything_else_in_one_line(value, message):
    with pytest.raises(BertsentError) as info:
        whole("epochs", value, 1, 8)
    assert str(info.value) == message


def test_whole_reads_command_line_text_and_auto_where_asked():
    assert whole("epochs", " 3", 1, parse=True) == 3
    assert whole("max_length", "auto", 8, auto=True) == "auto"
    with pytest.raises(BertsentError, match=r"^--max-length long: give a whole number of tokens or 'auto'\.$"):
        whole("max_length", "long", 8, auto=True, unit="of tokens", parse=True)
    with pytest.raises(BertsentError, match="give a whole number"):
        whole("epochs", "auto", 1)  # auto only where allowed
    with pytest.raises(BertsentError, match="give a whole number"):
        whole("epochs", "-2", 1, parse=True)
    with pytest.raises(BertsentError, match=r"^--epochs ²: give a whole number\.$"):
        whole("epochs", "²", 1, parse=True)  # a digit to str.isdigit; int() fails on it (a ValueError, once)


def test_rule_error_and_named_change_the_words_and_class_only():
    with pytest.raises(DataError, match=r"^--chunk-rows 0: must be a whole number of at least 1\.$"):
        whole("chunk_rows", 0, 1, rule="must be a whole number of at least 1", error=DataError)
    with pytest.raises(BertsentError, match=r"^top_k 0: must be at least 1\.$"):
        whole("top_k", 0, 1, named="top_k")

    class RequestError(Exception):  # a server's: a status and a kind besides the message
        def __init__(self, status, kind, message):
            super().__init__(message)
            self.status, self.kind = status, kind

    with pytest.raises(RequestError, match=r"^top_k 1\.5: give a whole number\.$") as info:
        whole("top_k", 1.5, 1, named="top_k", error=lambda message: RequestError(422, "validation", message))
    assert (info.value.status, info.value.kind) == (422, "validation")


@pytest.mark.parametrize(
    "low, high, closed, good, bad, words",
    [
        (0, 1, "left", [0, 0.5, 0.999], [1, -0.1, 1.5], "must be in [0, 1)"),
        (0, 1, "both", [0, 1], [1.01, -1e-9], "must be in [0, 1]"),
        (0, 1, "neither", [0.5], [0, 1], "must be in (0, 1)"),
        (0, 1, "right", [1, 0.1], [0], "must be in (0, 1]"),
        (0, None, "neither", [1e-12, 5], [0, -1], "must be above 0"),
        (0, None, "left", [0, 3], [-0.01], "must be 0 or more"),
        (None, 10, "both", [-5, 10], [10.5], "must be 10 or less"),
        (None, 10, "neither", [9.9], [10], "must be below 10"),
    ],
)
def test_number_accepts_its_interval_and_refuses_the_rest(low, high, closed, good, bad, words):
    for value in good:
        assert number("x", value, low, high, closed=closed) == value
    for value in bad:
        with pytest.raises(BertsentError) as info:
            number("x", value, low, high, closed=closed)
        assert str(info.value) == f"--x {value}: {words}."


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf, True, "0.5", None, [0.5]])
def test_number_refuses_nan_infinities_bools_and_non_numbers(value):
    with pytest.raises(BertsentError, match="must be in"):
        number("warmup_ratio", value, 0, 1, closed="left")


def test_number_reads_command_line_text():
    assert number("lr", "2e-5", 0, closed="neither", parse=True) == 2e-5
    with pytest.raises(BertsentError, match=r"^--lr fast: give a number\.$"):
        number("lr", "fast", 0, closed="neither", parse=True)
    with pytest.raises(BertsentError, match=r"^--lr nan: must be above 0\.$"):
        number("lr", "nan", 0, closed="neither", parse=True)
    with pytest.raises(ValueError):
        number("lr", 1, closed="open")  # a programming error, not a user's


def test_choice_and_switch():
    assert choice("metric", "loss", ("accuracy", "loss")) == "loss"
    with pytest.raises(BertsentError, match=r"^--metric auc: unknown value\. Use one of accuracy, loss\.$"):
        choice("metric", "auc", ("accuracy", "loss"))
    with pytest.raises(BertsentError, match=r"^--recipe slow: unknown recipe\. Use one of fast\.$"):
        choice("recipe", "slow", ("fast",), what="recipe")
    assert switch("packing", False) is False
    for value in ("yes", 1, None):
        with pytest.raises(BertsentError, match=r"^--packing .*: give True or False\.$"):
            switch("packing", value)


def test_constraints_check_as_the_functions_do_and_name_their_metavar():
    assert Whole(1).check("epochs", "2", parse=True) == 2 and Whole(1).metavar == "N"
    assert Whole(8, auto=True).check("max_length", "auto") == "auto" and Whole(8, auto=True).metavar == "N|auto"
    assert Number(0, 1, closed="left").check("warmup_ratio", "0.1", parse=True) == 0.1
    assert Choice(("a", "b")).metavar == "a|b" and Choice(("a", "b")).check("x", "b", parse=True) == "b"
    assert Switch().check("calibrate", True) is True
    for constraint, value in ((Whole(1), 0), (Number(0, closed="neither"), 0), (Choice(("a",)), "b"), (Switch(), 0)):
        with pytest.raises(BertsentError):
            constraint.check("x", value)
