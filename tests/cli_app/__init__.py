"""Workflows the CLI tests import by module path, as a user's app would be imported."""
