"""Errors a user can cause or fix, and how every command ends on one: one
line on stderr, never a traceback (unless --verbose asks for it)."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER = 2  # bad input, missing privilege or kernel feature: the line says the fix
EXIT_FAILED = 1  # a run or check that failed, or an unexpected error


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class StepFailed(Exception):
    """A scenario's setup step failed, so the run could not start: one line,
    exit 1 (the scenario is valid; the host did not cooperate)."""


def one_line_exit(prog: str, command: Callable[[], int], verbose: bool = False) -> int:
    """command()'s exit code; whatever it raises ends as one line on stderr."""
    try:
        return command()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER
    except StepFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # stdout closed by the reader (e.g. `| head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
    except Exception as e:
        if verbose:
            raise
        print(
            f"{prog}: error: {type(e).__name__}: {e} (rerun with --verbose for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED
