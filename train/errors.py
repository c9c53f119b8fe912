"""The one exception type for bad user input, shared by every stage.

The CLI turns it into a one-line message and exit code 2; anything else is a bug
and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a file, a parameter or a sample that cannot be used."""
