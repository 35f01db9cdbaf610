"""The one exception type for bad input a user can fix.

The CLI and the DVC stage scripts turn it into a one-line message and exit code 2;
anything else is a bug and keeps its traceback.
"""


class RotnetError(Exception):
    """Bad input (unknown data set, wrong checkpoint, invalid option...)."""
