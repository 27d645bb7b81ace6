"""The contract's errors: plain ``ValueError`` subclasses that each side maps to its own
(``sinder`` to one-line CLI errors, ``service`` to HTTP statuses)."""

from __future__ import annotations


class ContractError(ValueError):
    """Something does not follow the contract; the message names what and where."""


class ManifestError(ContractError):
    """A ``manifest.json`` that is missing, not JSON, or has a bad field (named in the message)."""


class LayoutError(ContractError):
    """A model repository, model folder or ``config.pbtxt`` that breaks the layout rules."""


class ImageError(ContractError):
    """An image that cannot be decoded or prepared."""


class ImageTooLarge(ImageError):
    """An image whose declared size is over the pixel limit (found from the header, before decoding)."""


class ResizeError(ContractError):
    """A resolution or resize request outside what the model accepts."""
