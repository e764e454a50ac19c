"""Run MedSSL's first-use install (or repair) inside a clean interpreter, through Slicer's ported pip_install.

``python install_driver.py --slicer 5.10|5.12 [--repair] MODULE_FOLDER...``: each folder is appended to
``sys.path`` as Slicer does for a module it loads (``qSlicerScriptedLoadableModuleFactory.cxx``,
``ctkFactoryScriptedItem::load``: ``appendPythonPaths(<module folder>)``); then MedSSLLib plans the install and
runs it with confirmation answered yes. Prints one JSON line: the plan, the pip argument lists and whether
anything is still missing afterwards.
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # slicer_pip

from slicer_pip import PIP_INSTALLS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slicer", choices=sorted(PIP_INSTALLS), required=True)
    parser.add_argument("--repair", action="store_true")
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args()
    sys.path.extend(args.folders)
    from MedSSLLib import install

    plan = install.planInstall(repair=args.repair)
    calls = []

    def pipInstall(arguments):
        calls.append(arguments)
        PIP_INSTALLS[args.slicer](arguments)

    def installTorch(requirement):
        raise AssertionError(f"torch{requirement} was asked for, but the PyTorch extension's torch is there")

    installers = install.SlicerInstallers(lambda text, title: True, installTorch, pipInstall)
    install.installDependencies(plan, installers, "MedSSLTest")
    after = install.planInstall()
    print(json.dumps({"plan": asdict(plan), "calls": calls, "after": asdict(after), "empty_after": after.empty}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
