"""The one exception type that the command line turns into a one-line message."""

import math
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user (missing or corrupt file, wrong shape, NaNs, ...).

    The CLI prints ``error: <message>`` on one line and exits with status 2; the message
    must say what is wrong and, where it helps, which file.
    """


def check_number(option: str, value: float, *, minimum: float | None = None,
                 above: float | None = None, maximum: float | None = None) -> float:
    """``value`` of a command-line option if it is finite and in range, else a UserError
    such as ``--lr must be a finite number > 0, got nan``."""
    bounds = [f">= {minimum:g}" if minimum is not None else None,
              f"> {above:g}" if above is not None else None,
              f"<= {maximum:g}" if maximum is not None else None]
    wanted = " and ".join(b for b in bounds if b)
    ok = math.isfinite(value) and (minimum is None or value >= minimum) and (
        above is None or value > above) and (maximum is None or value <= maximum)
    if not ok:
        raise UserError(f"{option} must be a finite number{' ' + wanted if wanted else ''}, "
                        f"got {value:g}")
    return value


def run_script(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status, or as the CLI does on a UserError: ``error: <message>``
    on stderr and status 2. For the scripts under benchmarks/ and scripts/."""
    try:
        status = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    raise SystemExit(status)
