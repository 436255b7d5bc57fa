"""The one exception type for user errors.

Anything a user can cause (a bad file, a wrong option, a missing checkpoint) is raised as
:class:`CxrganError` with a message that names the file or option and says what to do. The CLI prints
the message on one line and exits with status 2; it never shows a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class CxrganError(Exception):
    """A problem the user can fix; ``str(err)`` is the complete, actionable message."""


class SkipFile(CxrganError):
    """A single input file cannot be used; ``prepare`` skips it (or stops with ``--strict``)."""
