"""Exceptions for user mistakes.

Every error a user can cause by bad input derives from :class:`OFAError`; its message is one line that names
the problem and what is allowed. The command line turns these into exit code 2 without a traceback.
"""


class OFAError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched configuration."""


class ArchError(OFAError, ValueError):
    """An architecture (or architecture dict) that lies outside the search space or is malformed."""


class WeightsError(OFAError):
    """A weights file that is missing, corrupt, truncated or belongs to another network."""
