"""Errors of the data layer that concern a whole dataset."""


class DatasetError(ValueError):
    """A dataset cannot be read: unknown format, missing columns, values that are not text."""


class DatasetUnavailableError(DatasetError):
    """A named dataset could not be fetched from its public home (typically: no network)."""
