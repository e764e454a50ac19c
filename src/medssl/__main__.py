"""``python -m medssl``: same as the ``medssl`` command."""
import sys

from .cli.main import main

sys.exit(main())
