"""How every ``dsm`` command reports bad input: one line on stderr naming the file or flag and the problem,
and exit status 2 (argparse's own status for a bad argument)."""

from __future__ import annotations

import sys


def one_line(e: BaseException | str) -> str:
    """``e``'s message with line breaks and runs of spaces folded: a library's multi-line error (YAML,
    pandas, OpenCV, a CUDA probe) still prints as the one line our commands promise."""
    return " ".join(str(e).split())


def fail(problem: BaseException | str, prog: str = "error") -> int:
    """Print ``prog: problem`` as one line on stderr and return 2, for ``return fail(e)`` in a command."""
    print(f"{prog}: {one_line(problem)}", file=sys.stderr)
    return 2
