"""Pretraining methods; importing a file registers it (one file + one line here adds a method)."""
from . import dino3d  # noqa: F401
from . import mae3d  # noqa: F401
from . import voco  # noqa: F401
from . import volume_fusion  # noqa: F401
