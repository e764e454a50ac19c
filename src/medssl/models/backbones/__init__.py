"""Backbone families; importing a file registers it (one file + one line here adds a backbone)."""
from . import resenc  # noqa: F401
from . import vit3d  # noqa: F401
from . import swin_unetr  # noqa: F401
from . import pctnet  # noqa: F401
from . import fmunet  # noqa: F401
