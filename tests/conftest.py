"""Settings every test shares.

The CLI draws rich tables as wide as the terminal says (`COLUMNS`), and subprocesses inherit
it; a test must not pass in one terminal and fail in a narrower one (or under pytest-xdist,
whose workers set it), so the suite fixes a width wide enough for what tests assert.
"""

from __future__ import annotations

import os

os.environ["COLUMNS"] = "200"
