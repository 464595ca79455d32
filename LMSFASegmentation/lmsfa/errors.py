"""Exceptions that carry a message meant for the user (CLI output, Slicer dialogs)."""


class LmsfaError(Exception):
    """Base class: the message names the offending value and what to do about it."""


class InputError(LmsfaError, ValueError):
    """Invalid or unreadable user input: a file, folder, option or data set."""


class CheckpointError(LmsfaError, ValueError):
    """A model file that is missing, corrupt, untrusted or does not fit the network."""


class Cancelled(LmsfaError):
    """Long work stopped at the user's request; what finished before is kept."""
