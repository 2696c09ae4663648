"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""


class BertsentError(Exception):
    """A problem with the user's input (file, column, model, option): the message says what to do."""


class DataError(BertsentError, ValueError):
    """A data source that cannot be read or used."""


class ModelError(BertsentError, OSError):
    """A model that cannot be found or loaded."""


def first_line(exc: BaseException, named: bool = False) -> str:
    """An exception's message in one line, for a message of ours (`named`: after its type); else its type."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if named else text.splitlines()[0]
