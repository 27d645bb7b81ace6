"""The tool's error type: the CLI prints its message on one line and exits non-zero."""


class SinderError(Exception):
    """A problem the user can fix (bad path, bad checkpoint, bad images, bad option)."""


class CheckpointError(SinderError):
    """A checkpoint file that is missing, unreadable, of an unknown layout or the wrong shape."""


class ImageError(SinderError):
    """An image folder that is missing, empty, or holds unreadable images."""
