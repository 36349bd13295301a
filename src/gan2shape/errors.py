"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """Bad input from the user (missing or corrupt file, wrong shape, NaNs, ...).

    The CLI prints ``error: <message>`` on one line and exits with status 2; the message
    must say what is wrong and, where it helps, which file.
    """
