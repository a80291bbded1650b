"""Errors a user can cause or fix. The CLI prints them as one line, exit 2."""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class StepFailed(Exception):
    """A scenario's setup step failed, so the run could not start: one line,
    exit 1 (the scenario is valid; the host did not cooperate)."""
