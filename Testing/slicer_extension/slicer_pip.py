"""Slicer's ``pip_install`` argument handling, ported from Slicer's own source, running real pip.

Ported from 3D Slicer (BSD-style Slicer License, https://github.com/Slicer/Slicer), with only the Qt/GUI parts
left out (they pass the same argument list on):

- ``pip_install_510``: tag v5.10.0 (a2b6d082be), ``Base/Python/slicer/util.py``: ``pip_install`` (line 3991;
  ``shlex.split`` of a string at 4028, a list taken as it is at 4030, anything else ``ValueError``) and
  ``_executePythonModule`` (3957: ``[PythonSlicer, "-m", module, *args]`` with the current environment, a
  non-zero exit raises ``CalledProcessError`` in ``logProcessOutput``, 3922).
- ``pip_install_512``: tag v5.12.0 (a5df71450f), ``Base/Python/slicer/packaging.py``: ``pip_install`` (517; from
  PythonSlicer and in testing mode ``_pip_install_simple``, 675; the progress-dialog and status-bar paths build
  the same arguments), ``_build_pip_args`` (914: ``shlex.split`` of a string, a ``list`` as it is, ``--no-deps``
  and ``-c constraints`` appended). ``slicer.util.pip_install`` (util.py 4326) only delegates here.
  Unchanged on main @583e9b3 (2026-08-21, packaging.py 696 and 935).

"PythonSlicer" is the interpreter running this module (``sys.executable``), as in ``_executePythonModule``'s
console branch; pip reads its index settings from the environment (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from subprocess import CalledProcessError
from typing import Optional, Union

Requirements = Union[str, list]


def _execute_python_module(module: str, args) -> str:
    """``_executePythonModule`` / ``executePythonModule(blocking=True)``: run, echo the output, raise on failure."""
    command_line = [sys.executable, "-m", module, *args]
    proc = subprocess.run(command_line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise CalledProcessError(proc.returncode, command_line, output=proc.stdout)
    return proc.stdout


def pip_install_510(requirements: Requirements) -> None:
    """Slicer 5.10 ``slicer.util.pip_install``."""
    if type(requirements) == str:  # noqa: E721 (as in Slicer: a str subclass is refused too)
        args = "install", *(shlex.split(requirements))
    elif type(requirements) == list:  # noqa: E721 (a tuple is refused)
        args = "install", *requirements
    else:
        raise ValueError("pip_install requirement input must be string or list")
    _execute_python_module("pip", args)


def _build_pip_args(requirements: Requirements, constraints: Optional[Union[str, Path]] = None,
                    no_deps: bool = False) -> list:
    """Slicer 5.12+ ``slicer.packaging._build_pip_args``."""
    if type(requirements) == str:  # noqa: E721
        args = ["install", *(shlex.split(requirements))]
    elif type(requirements) == list:  # noqa: E721
        args = ["install", *requirements]
    else:
        raise ValueError("pip_install requirement input must be string or list")
    if no_deps:
        args.append("--no-deps")
    if constraints is not None:
        args.extend(["-c", str(constraints)])
    return args


def pip_install_512(requirements: Requirements, constraints=None, no_deps_requirements=None,
                    requester: Optional[str] = None) -> None:
    """Slicer 5.12+ ``slicer.packaging.pip_install`` (blocking; ``skip_packages`` is not used by MedSSL)."""
    if no_deps_requirements is not None:
        _execute_python_module("pip", _build_pip_args(no_deps_requirements, constraints, no_deps=True))
    _execute_python_module("pip", _build_pip_args(requirements, constraints, no_deps=False))


def install_one_args_512(requirement: str, constraints=None) -> list:
    """The pip arguments ``_pip_install_with_skips._install_one`` builds for one requirement (v5.12.0
    packaging.py:1011-1013, main 1032-1034): ``name[extras]specifier``; the marker and any URL are dropped."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    extras_str = f"[{','.join(req.extras)}]" if req.extras else ""
    install_str = f"{req.name}{extras_str}{req.specifier}"
    return _build_pip_args(install_str, constraints, no_deps=True)


PIP_INSTALLS = {"5.10": pip_install_510, "5.12": pip_install_512}
