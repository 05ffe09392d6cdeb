"""A module whose import fails, as a user's app with a broken import-time setup would."""

raise RuntimeError("config file missing")
