"""Errors a user can act on. Each message says what was wrong and what to do about it.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``.
"""
from __future__ import annotations

__all__ = ["GramcastError", "InvalidImageError", "FaceNotFoundError", "MultipleFacesError", "FaceTooSmallError",
           "FaceTurnedError", "AvatarFormatError", "CheckpointError", "OutputPathError", "InvalidArgumentError"]


class GramcastError(Exception):
    """Base class of every error gramcast raises on purpose."""

    exit_code = 2


class InvalidImageError(GramcastError):
    """The file is not an image we can decode (corrupt, truncated, empty, unsupported)."""


class FaceNotFoundError(GramcastError):
    """No face was found where exactly one is needed."""


class MultipleFacesError(GramcastError):
    """More than one face where exactly one is needed."""


class FaceTooSmallError(GramcastError):
    """The face is too small to align and enroll."""


class FaceTurnedError(GramcastError):
    """The face is turned too far from the camera to enroll from."""


class AvatarFormatError(GramcastError):
    """An avatar (.gca) file is truncated, foreign, or of an unsupported version."""


class CheckpointError(GramcastError):
    """A model checkpoint is missing, corrupt, or does not match the expected configuration."""


class OutputPathError(GramcastError):
    """An output path cannot be written (missing or read-only folder, read-only file system, protected file)."""


class InvalidArgumentError(GramcastError, ValueError):
    """A function was given an argument it cannot use (an unknown option, a value out of range, an object of
    the wrong kind). Also a ``ValueError``, which such arguments raised before gramcast had this class."""
