"""The exception for mistakes in what a user asked for (bad file, unknown name, missing run directory).

The `soup-trl` command prints a `UserError` as one line and exits with status 1; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported without a traceback by the command line."""


class DataError(UserError, ValueError):
    """Training data a trainer cannot use, found before training starts; the message names the rows and the fix."""
