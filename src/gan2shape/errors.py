"""The one exception type that the command line turns into a one-line message."""

import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user (missing or corrupt file, wrong shape, NaNs, ...).

    The CLI prints ``error: <message>`` on one line and exits with status 2; the message
    must say what is wrong and, where it helps, which file.
    """


def run_script(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status, or as the CLI does on a UserError: ``error: <message>``
    on stderr and status 2. For the scripts under benchmarks/ and scripts/."""
    try:
        status = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    raise SystemExit(status)
