"""Which Slicer MedSSL runs on: Slicer 5.10 and 5.12+ (Python 3.12), found by feature detection.

Never by version string: each check asks for the feature MedSSL uses. What decides it is Slicer's Python:
Slicer 5.6 and 5.8 have Python 3.9.10, 5.10, 5.12 and main 3.12.10 (``Slicer_REQUIRED_PYTHON_VERSION`` in
Slicer's top-level ``CMakeLists.txt`` at v5.8.1, v5.10.0, v5.12.0). The core needs Python 3.10+
(its ``requires-python``) and MedSSLLib reads the core's ``pyproject.toml`` with ``tomllib`` (3.11+). This file
itself, and everything MedSSLLib imports at start-up, parses on Python 3.9, so an older Slicer loads the
modules and shows `unsupportedReason` instead of raising.
"""

from __future__ import annotations

import importlib.util
import platform
from typing import Callable, Optional

SUPPORTED = "Slicer 5.10 or later"
DOWNLOAD = "https://download.slicer.org"


def missingFeatures(findSpec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """What this Python lacks that MedSSL uses (empty on a supported Slicer)."""
    missing = []
    if findSpec("tomllib") is None:  # Python 3.11+: the core's pyproject.toml is read with it
        missing.append("tomllib")
    try:
        int | None  # noqa: B018 (PEP 604 unions at run time: Python 3.10+, the core uses them)
    except TypeError:
        missing.append("PEP 604 unions")
    return missing


def unsupportedReason(findSpec: Callable[[str], object] = importlib.util.find_spec) -> Optional[str]:
    """One line saying what MedSSL needs, or None when this Slicer is supported."""
    missing = missingFeatures(findSpec)
    if not missing:
        return None
    return (f"MedSSL needs {SUPPORTED} (Python 3.12; this Slicer has Python {platform.python_version()}, "
            f"without {', '.join(missing)}): install the current Slicer from {DOWNLOAD}")


def checkSupported(display: Optional[Callable[[str], object]] = None) -> bool:
    """True on a supported Slicer with the core in place; else shows why in one line (`unsupportedReason`, or
    where the core was looked for) with ``slicer.util.errorDisplay`` and returns False."""
    from . import bundled_core

    reason = unsupportedReason()
    if reason is None:
        try:
            bundled_core.coreRoot()
            return True
        except bundled_core.CoreNotFound as exc:
            reason = f"MedSSL cannot start: {exc}"
    if display is None:
        import slicer

        display = slicer.util.errorDisplay
    display(reason)
    return False
