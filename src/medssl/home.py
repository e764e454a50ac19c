"""The medssl home folder: downloaded weights and locally registered model packages.

``~/.medssl`` by default, shared by the command line and every 3D Slicer version; the ``MEDSSL_HOME``
environment variable overrides it. Layout: ``weights/<catalog id>/<file>`` and ``models/<name>/`` (packages).
"""
from __future__ import annotations

import os
from pathlib import Path


def medssl_home() -> Path:
    """The home folder (not created)."""
    env = os.environ.get("MEDSSL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".medssl"


def weights_dir() -> Path:
    return medssl_home() / "weights"


def models_dir() -> Path:
    return medssl_home() / "models"
