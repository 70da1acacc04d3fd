"""How every ``dsm`` command reports bad input: one line on stderr, ``dsm <command>: error: <problem>``, naming
the file or flag and the problem, and exit status 2 -- argparse's own form and status for a bad argument, so a
script sees one shape whether argparse or the command caught the mistake."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def one_line(e: BaseException | str) -> str:
    """``e``'s message with line breaks and runs of spaces folded: a library's multi-line error (YAML,
    pandas, OpenCV, a CUDA probe) still prints as the one line our commands promise."""
    return " ".join(str(e).split())


def fail(problem: BaseException | str, prog: str) -> int:
    """Print ``prog: error: problem`` as one line on stderr and return 2, for ``return fail(e, PROG)``."""
    print(f"{prog}: error: {one_line(problem)}", file=sys.stderr)
    return 2


def run_command(run: Callable[[Any], int | None], args: Any, prog: str) -> int:
    """``run(args)``'s exit status, with what the command did not foresee reported as one line, not a
    traceback (``DSM_DEBUG=1`` lets it through): the ``dsm`` command and ``data_scripts/`` share it."""
    if os.environ.get("DSM_DEBUG"):
        return int(run(args) or 0)
    try:
        return int(run(args) or 0)
    except OSError as e:  # a path the command could not read or write
        return fail(f"{e.filename}: {e.strerror or e}" if e.filename else (e.strerror or e), prog)
    except Exception as e:  # noqa: BLE001
        kind = "" if type(e).__name__ in ("DataError", "CheckpointError") else f"{type(e).__name__}: "
        return fail(f"{kind}{one_line(e)[:500]} (DSM_DEBUG=1 shows the traceback)", prog)


def warn(problem: BaseException | str, prog: str) -> None:
    """Print ``prog: warning: problem`` as one line on stderr: reported, and the command goes on."""
    print(f"{prog}: warning: {one_line(problem)}", file=sys.stderr)


@contextlib.contextmanager
def warnings_as_lines(prog: str, always: bool = False) -> Iterator[None]:
    """Python warnings raised in the block print as one ``prog: warning: ...`` line each, not in Python's
    two-line form with a source line; ``always`` shows a repeated warning every time, not once per place."""
    with warnings.catch_warnings():
        if always:
            warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: warn(message, prog)
        yield


def missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    return [p for p in [path.parent, *path.parent.parents] if not p.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder that is still empty (deepest first): what a failed command made and left unused."""
    for p in folders:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()


@contextlib.contextmanager
def parents_made_for(path: Path) -> Iterator[None]:
    """Create ``path``'s missing folders for the block and remove them again if it fails: a failed
    command leaves nothing half-written, not even an empty folder."""
    made = missing_parents(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        remove_empty(made)
        raise
