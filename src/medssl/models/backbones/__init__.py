"""Backbone families; importing a file registers it (one file + one line here adds a backbone)."""
from . import resenc  # noqa: F401
