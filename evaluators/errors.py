"""Exceptions that the ``unitune`` CLI turns into one clear line instead of a traceback."""

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in the user's input or arguments (bad file, missing key, wrong option).

    The CLI prints the message alone and exits with status 2. Messages name the argument or file,
    what was expected and what was received.
    """
