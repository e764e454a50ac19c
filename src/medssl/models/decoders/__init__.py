"""Decoders; importing a file registers it (one file + one line here adds a decoder)."""
from . import unet  # noqa: F401
