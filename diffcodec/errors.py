"""The one exception type library code raises for problems a user can fix."""


class DiffcodecError(Exception):
    """Bad input, a corrupt or foreign stream, a wrong model: one line for the user."""
