"""Decoders; importing a file registers it (one file + one line here adds a decoder)."""
from . import unet  # noqa: F401
from . import unetr  # noqa: F401
from . import swin_unetr  # noqa: F401
from . import pctnet  # noqa: F401
from . import fmunet  # noqa: F401
