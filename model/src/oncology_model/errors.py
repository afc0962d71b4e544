"""One error base class for everything a user can act on.  Each message says what was wrong and where."""

from __future__ import annotations


class OncologyError(Exception):
    """Base class of every error this project raises on purpose."""


class BundleError(OncologyError):
    """A model bundle is missing a file, has been tampered with, or cannot be read."""


class StoreError(OncologyError):
    """The model store cannot be reached or refused an operation."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (a connection failed): trying again later may work."""


class NotFoundError(StoreError):
    """A key, version or alias does not exist in the store."""


class RegistryError(OncologyError):
    """A registry operation is not allowed (republishing a version, nothing to roll back to, ...)."""


class ConflictError(RegistryError):
    """Another writer got there first: the object or version exists, or changed since it was read."""
