"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""


class BertsentError(Exception):
    """A problem with the user's input (file, column, model, option): the message says what to do."""


class DataError(BertsentError, ValueError):
    """A data source that cannot be read or used."""


class ModelError(BertsentError, OSError):
    """A model that cannot be found or loaded."""
