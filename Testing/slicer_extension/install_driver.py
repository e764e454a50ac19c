"""Run MedSSL's first-use install (or repair) inside a clean interpreter, through Slicer's ported pip_install.

``python install_driver.py --slicer 5.10|5.12 [--repair] [--torch-from DIR] MODULE_FOLDER...``: each folder is
appended to
``sys.path`` as Slicer does for a module it loads (``qSlicerScriptedLoadableModuleFactory.cxx``,
``ctkFactoryScriptedItem::load``: ``appendPythonPaths(<module folder>)``); then MedSSLLib plans the install and
runs it with confirmation answered yes. ``installTorch`` puts DIR (torch and its requirements) on the path, as
the PyTorch extension's pip install would. Prints one JSON line: the plan, the pip argument lists, the
constraints each call had, and whether anything is still missing afterwards.
"""

import argparse
import json
import sys
import sysconfig
from dataclasses import asdict
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # slicer_pip

from slicer_pip import PIP_INSTALLS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slicer", choices=sorted(PIP_INSTALLS), required=True)
    parser.add_argument("--repair", action="store_true")
    parser.add_argument("--torch-from", type=Path)
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args()
    sys.path.extend(args.folders)
    from MedSSLLib import install

    plan = install.planInstall(repair=args.repair)
    calls, constraints, torch = [], [], []

    def pipInstall(arguments):
        calls.append(arguments)
        if arguments[0] == "-c":
            constraints.append(Path(arguments[1]).read_text(encoding="utf-8").split())
        PIP_INSTALLS[args.slicer](arguments)

    def installTorch(requirement):
        if args.torch_from is None:
            raise AssertionError(f"torch{requirement} was asked for, but the PyTorch extension's torch is there")
        torch.append(requirement)
        site = Path(sysconfig.get_paths()["purelib"])
        (site / "pytorch-extension.pth").write_text(f"{args.torch_from}\n", encoding="utf-8")  # for pip
        sys.path.append(str(args.torch_from))  # for this process, as after pip's install into site-packages
        return object()

    installers = install.SlicerInstallers(lambda text, title: True, installTorch, pipInstall)
    install.installDependencies(plan, installers, "MedSSLTest")
    after = install.planInstall()
    print(json.dumps({"plan": asdict(plan), "calls": calls, "constraints": constraints, "torch": torch,
                      "after": asdict(after), "empty_after": after.empty}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
