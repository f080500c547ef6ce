"""The exception type for bad data sets, episode files and runs."""
from weights_convert.errors import CaffeFormatError


class ReproduceError(ValueError):
    """Bad input to the evaluation pipeline; the message names the file or item and what was expected."""


def raise_problems(problems: list[str], heading: str = "") -> None:
    """One ReproduceError listing every problem found, so a user fixes them all in one go; none: return."""
    if not problems:
        return
    if len(problems) == 1 and not heading:
        raise ReproduceError(problems[0])
    raise ReproduceError(f"{heading or f'{len(problems)} problems'}:\n  - " + "\n  - ".join(problems))


def collect(problems: list[str], check, *args):
    """check(*args), or None with its error's message added to `problems` (bad input, a wrong
    file, an unreadable path): for commands that report every problem at once."""
    try:
        return check(*args)
    except (ReproduceError, CaffeFormatError, OSError) as exc:
        problems.append(str(exc))
        return None
