"""Python dependencies of MedSSL inside Slicer: what is missing, one confirmation, installation, diagnostics.

The medssl core is never pip-installed: it is pure Python shipped with the extension (or the clone the modules
run from) and is used from there (`MedSSLLib.bundled_core`). On first use `planInstall` lists what its
requirements still miss and `installDependencies` asks once, then installs

1. torch through the PyTorch extension (``PyTorchUtils.installTorch``, the build that fits the GPU);
2. the core's other requirements (its ``pyproject.toml`` dependencies, minus torch and SimpleITK) in one
   ``slicer.util.pip_install`` call, with a constraints file that pins torch, SimpleITK and numpy at the
   versions Slicer already has, so pip picks compatible releases instead of replacing them;
3. each ``Resources/requirements-no-deps.txt`` line (dynamic-network-architectures: its timm pin would pull
   another torch) in a call of its own with ``--no-deps``;
4. on an x86 CPU, the core's ``[openvino]`` extra (OpenVINO, the runtime ``--runtime auto`` picks there, and
   onnx for the export) in a last call of its own: optional, so a failure (no wheel for this Python) is logged
   and MedSSL predicts with torch. It comes with any install and with "Install / repair", but is never a reason
   to ask on its own.

Every pip call passes a **list** of arguments: Slicer splits a string with ``shlex.split`` (v5.10.0
``Base/Python/slicer/util.py`` ``pip_install``; v5.12.0 and main ``Base/Python/slicer/packaging.py``
``_build_pip_args``), a list goes to pip as it is, on every version. SimpleITK is never installed by pip (Slicer
has its own build). "Install / repair" (``repair=True``) passes every requirement to pip, which adds whatever
a broken environment misses, and reinstalls (``--force-reinstall --no-deps``, same version) each distribution
they pull in whose files are partly gone.
The Slicer functions are passed in (`SlicerInstallers`), so the tests run this code with real pip.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import bundled_core, support

NO_DEPS_FILE = Path(__file__).parent / "Resources" / "requirements-no-deps.txt"
TORCH_REQUIREMENT = ">=2.3"
# Never installed by pip here: torch comes from PyTorchUtils, SimpleITK is Slicer's own build.
SKIP_PACKAGES = ("torch", "torchvision", "torchaudio", "SimpleITK")
# Pinned at their installed version in every pip call (constraints file): pip must not replace them.
PINNED_PACKAGES = SKIP_PACKAGES + ("numpy",)


def _requirement(text: str):
    """``packaging.requirements.Requirement`` (imported on use: nothing non-standard at Slicer start-up)."""
    from packaging.requirements import Requirement

    return Requirement(text)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _skipped(name: str) -> bool:
    return _canonical(name) in {_canonical(s) for s in SKIP_PACKAGES}


def _applies(req) -> bool:
    """The requirement's marker (if any) holds here, outside any extra."""
    from packaging.markers import default_environment

    return req.marker is None or req.marker.evaluate({**default_environment(), "extra": ""})


def _plain(req) -> str:
    """``name[extras]specifier`` without marker or URL (one argument, no spaces)."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def _requires(name: str) -> list:
    """The installed distribution's requirements that apply here (unparsable lines skipped, as Slicer does)."""
    from packaging.requirements import InvalidRequirement

    parsed = []
    for line in metadata.requires(name) or []:
        try:
            parsed.append(_requirement(line))
        except InvalidRequirement:
            continue
    return [req for req in parsed if _applies(req)]


def readRequirementLines(path: Path) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def pipRequirements(root: Optional[Path] = None) -> list[str]:
    """The core's requirements that pip installs here: markers evaluated, torch and SimpleITK left out."""
    reqs = [_requirement(line) for line in bundled_core.coreRequirements(root)]
    return [_plain(req) for req in reqs if _applies(req) and not _skipped(req.name)]


OPTIONAL_EXTRA = "openvino"


def optionalRequirements(root: Optional[Path] = None) -> list[str]:
    """The ``[openvino]`` extra on an x86 CPU (where ``--runtime auto`` uses it; elsewhere it is never chosen)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return []
    reqs = [_requirement(line) for line in bundled_core.coreExtraRequirements(OPTIONAL_EXTRA, root)]
    return [_plain(req) for req in reqs if _applies(req)]


def noDepsRequirements(path: Optional[Path] = None) -> list[str]:
    return readRequirementLines(path or NO_DEPS_FILE)


def installedVersion(name: str) -> Optional[str]:
    """Version of an installed distribution (metadata, nothing imported); medssl: the core used from its folder."""
    if _canonical(name) == "medssl":
        root = bundled_core.findCoreRoot()
        return bundled_core.coreVersion(root) if root else None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def isSatisfied(requirement: str) -> bool:
    """Installed at an accepted version (``medssl``: the core is there and all its requirements are complete)."""
    from packaging.requirements import InvalidRequirement

    try:
        req = _requirement(requirement)
    except InvalidRequirement:
        return False
    if not _applies(req):
        return True
    version = installedVersion(req.name)
    if version is None or (req.specifier and not req.specifier.contains(version, prereleases=True)):
        return False
    if _canonical(req.name) == "medssl":
        return not missingRequirements(pipRequirements()) and not _missingNoDeps(noDepsRequirements())
    return True


def isComplete(requirement: str, seen: Optional[set[str]] = None) -> bool:
    """Satisfied, and so is everything its installed metadata requires (skipped packages aside)."""
    seen = set() if seen is None else seen
    req = _requirement(requirement)
    name = _canonical(req.name)
    if name in seen or _skipped(name):
        return True
    seen.add(name)
    if not isSatisfied(requirement):
        return False
    return all(isComplete(_plain(dep), seen) for dep in _requires(req.name))


def missingRequirements(requirements: Sequence[str]) -> list[str]:
    """The requirements that are not installed, or whose own requirements are not (pip must see them)."""
    return [r for r in requirements if not isComplete(r)]


def _missingNoDeps(requirements: Sequence[str]) -> list[str]:
    return [r for r in requirements if not isSatisfied(r)]  # --no-deps: their own requirements are not ours


@dataclass
class InstallPlan:
    """What the first-use dialog lists and `installDependencies` installs."""

    torch: Optional[str] = None  # "torch>=2.3" when torch is missing or too old (installed by PyTorchUtils)
    packages: list[str] = field(default_factory=list)  # one pip call, pip resolves their requirements
    noDeps: list[str] = field(default_factory=list)  # one --no-deps pip call each
    reinstall: list[str] = field(default_factory=list)  # repair: "name==version", --force-reinstall --no-deps each
    core: str = ""  # "medssl 0.1.0 in <folder>"
    optional: list[str] = field(default_factory=list)  # one last pip call that may fail (OpenVINO)

    @property
    def empty(self) -> bool:
        """Nothing required is missing (the optional packages alone never make MedSSL ask)."""
        return self.torch is None and not self.packages and not self.noDeps and not self.reinstall

    def describe(self) -> str:
        lines = []
        if self.torch:
            lines.append(f"- {self.torch} (PyTorch, through the PyTorch extension; the build that fits your GPU)")
        lines += [f"- {package}" for package in self.packages]
        lines += [f"- {package} (without its own requirements)" for package in self.noDeps]
        lines += [f"- {package} (reinstalled)" for package in self.reinstall]
        lines += [f"- {package} (optional: faster prediction on this CPU; MedSSL works without it)"
                  for package in self.optional]
        if self.packages:
            lines.append("and what these require; torch, SimpleITK and numpy stay as they are")
        if self.core:
            lines.append(f"The MedSSL core ({self.core}) is used from there: it is not installed.")
        return "\n".join(lines)


def isIntact(name: str) -> bool:
    """Every file the distribution's RECORD lists is still there (caches and scripts aside)."""
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return False
    kept = [f for f in files if not str(f).startswith("..") and "__pycache__" not in str(f)
            and not str(f).endswith(".pyc")]
    return all(Path(f.locate()).exists() for f in kept)


def brokenDistributions(requirements: Sequence[str], seen: Optional[set[str]] = None,
                        follow: bool = True) -> list[str]:
    """``name==version`` of each installed distribution the requirements pull in (transitively when ``follow``)
    whose files are partly gone: pip thinks it installed, so only ``--force-reinstall`` brings it back."""
    seen = set() if seen is None else seen
    broken = []
    for requirement in requirements:
        req = _requirement(requirement)
        name = _canonical(req.name)
        if name in seen or _skipped(name) or not _applies(req):
            continue
        seen.add(name)
        version = installedVersion(req.name)
        if version is None:
            continue
        if not isIntact(req.name):
            broken.append(f"{req.name}=={version}")
        if follow:
            broken += brokenDistributions([_plain(dep) for dep in _requires(req.name)], seen)
    return broken


def planInstall(repair: bool = False) -> InstallPlan:
    """What is missing; ``repair`` (the "Install / repair" button) also hands every requirement to pip (which adds
    what they miss) and reinstalls, same version and ``--no-deps``, what has lost files. A broken torch is
    repaired in the PyTorch Utils module."""
    root = bundled_core.coreRoot()
    torchRequirement = f"torch{TORCH_REQUIREMENT}"
    torch = None if isSatisfied(torchRequirement) else torchRequirement
    packages = pipRequirements(root)
    noDeps = noDepsRequirements()
    missingNoDeps = _missingNoDeps(noDeps)
    core = f"medssl {bundled_core.coreVersion(root)} in {root}"
    optional = optionalRequirements(root)
    if repair:
        seen: set[str] = set()
        broken = brokenDistributions(packages, seen) + brokenDistributions(noDeps, seen, follow=False)
        return InstallPlan(torch, packages, missingNoDeps, broken, core, optional)
    return InstallPlan(torch, missingRequirements(packages), missingNoDeps, [], core, missingRequirements(optional))


def constraintLines(names: Sequence[str] = PINNED_PACKAGES) -> list[str]:
    """``name==version`` for each of ``names`` that is installed (a pip constraints file)."""
    return [f"{name}=={version}" for name in names if (version := installedVersion(name)) is not None]


@dataclass
class SlicerInstallers:
    """The Slicer functions `installDependencies` calls (real ones from `slicerInstallers`)."""

    confirm: Callable[[str, str], bool]
    installTorch: Callable[[str], Any]
    pipInstall: Callable[[list], Any]  # slicer.util.pip_install with a list of arguments


def pipCalls(plan: InstallPlan, constraintsFile: str) -> list[list[str]]:
    """The argument lists of the pip calls for ``plan`` (each a ``list``, as pip_install needs for spaces)."""
    calls = [["-c", constraintsFile, *plan.packages]] if plan.packages else []
    calls += [["--no-deps", package] for package in plan.noDeps]
    calls += [["--force-reinstall", "--no-deps", package] for package in plan.reinstall]
    return calls


def optionalPipCall(plan: InstallPlan, constraintsFile: str) -> Optional[list[str]]:
    """The argument list of the last, optional pip call (None when nothing optional is missing)."""
    return ["-c", constraintsFile, *plan.optional] if plan.optional else None


def installDependencies(plan: InstallPlan, installers: SlicerInstallers, requester: str = "MedSSL",
                        askConfirmation: bool = True) -> bool:
    """Install what ``plan`` lists after one confirmation; returns False if the user declined."""
    if plan.empty:
        return True
    message = (f"{requester} needs these Python packages. They will be downloaded and installed into Slicer's "
               f"Python (this can take several minutes):\n\n{plan.describe()}\n\nContinue?")
    if askConfirmation and not installers.confirm(message, f"{requester} - install dependencies"):
        return False
    if plan.torch:
        if installers.installTorch(plan.torch[len("torch"):]) is None:
            raise RuntimeError("PyTorch was not installed; install it from the PyTorch Utils module and try again")
        importlib.invalidate_caches()  # the constraints below pin the torch just installed
    with tempfile.TemporaryDirectory(prefix="medssl-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("".join(f"{line}\n" for line in constraintLines()), encoding="utf-8")
        for args in pipCalls(plan, os.fspath(constraints)):
            installers.pipInstall(list(args))
        _installOptional(plan, installers, os.fspath(constraints))
    importlib.invalidate_caches()  # pip ran in another process: make importlib.metadata look again
    still = missingRequirements(plan.packages) + _missingNoDeps(plan.noDeps + plan.reinstall)
    still += [r for r in plan.reinstall if not isIntact(_requirement(r).name)]
    if still:
        raise RuntimeError(f"{', '.join(still)} still not installed after pip ran; see pip's output in the "
                           f"Python console")
    return True


def _installOptional(plan: InstallPlan, installers: SlicerInstallers, constraintsFile: str) -> bool:
    """Install the optional packages; a failure is one warning (prediction then runs with torch), not an error."""
    args = optionalPipCall(plan, constraintsFile)
    if args is None:
        return True
    try:
        installers.pipInstall(args)
        return True
    except Exception as exc:  # pip's CalledProcessError, or Slicer's own error dialog path
        logging.warning(f"MedSSL: {', '.join(plan.optional)} could not be installed ({type(exc).__name__}); "
                        f"predictions run with torch. Try again with Install / repair.")
        return False


def _pipInstaller(requester: str) -> Callable[[list], Any]:
    """``slicer.packaging.pip_install`` with ``requester`` (its progress dialog names MedSSL) where it takes one
    (5.12+), else ``slicer.util.pip_install`` (5.10); chosen by signature, not by version."""
    import inspect

    import slicer.util

    try:
        from slicer.packaging import pip_install
    except ImportError:
        return slicer.util.pip_install
    if "requester" in inspect.signature(pip_install).parameters:
        return lambda args: pip_install(args, requester=requester)
    return pip_install


def slicerInstallers(requester: str = "MedSSL") -> SlicerInstallers:
    """The real functions inside the Slicer application (the PyTorch extension must be installed)."""
    import slicer

    try:
        import PyTorchUtils
    except ImportError as exc:
        raise RuntimeError("MedSSL needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, "
                           "restart Slicer and try again") from exc
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    return SlicerInstallers(
        confirm=lambda text, title: slicer.util.confirmOkCancelDisplay(text, title),
        installTorch=lambda requirement: torchLogic.installTorch(askConfirmation=False,
                                                                 torchVersionRequirement=requirement),
        pipInstall=_pipInstaller(requester))


def parseInfo(lines: Sequence[str]) -> Optional[dict[str, Any]]:
    """The JSON object printed by ``medssl info --json`` (last JSON line of the output)."""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError:
                continue
    return None


def formatDiagnostics(info: Optional[dict[str, Any]]) -> str:
    """Text for the diagnostics box: versions, CUDA, GPUs with memory, folders."""
    if info is None:
        return basicDiagnostics()
    gpus = info.get("gpus") or []
    gpuText = "; ".join(f"{g.get('name')} ({g.get('memory_total_gb')} GB, {g.get('memory_free_gb')} GB free)"
                        for g in gpus) or "none visible to torch"
    cuda = f"yes (CUDA {info.get('cuda_version')})" if info.get("cuda_available") else "no"
    return "\n".join([f"medssl {info.get('medssl')}, torch {info.get('torch')}, MONAI {info.get('monai')}, "
                      f"Python {info.get('python')}", f"CUDA available: {cuda}", f"GPU: {gpuText}",
                      f"CPU threads: {info.get('cpu_threads')}", f"MedSSL folder: {info.get('medssl_home')}"])


def basicDiagnostics() -> str:
    """Versions from package metadata only (before the requirements are installed or when ``medssl info`` fails)."""
    names = ("medssl", "torch", "monai", "SimpleITK", "dynamic-network-architectures")
    versions = ", ".join(f"{name} {installedVersion(name) or 'not installed'}" for name in names)
    root = bundled_core.findCoreRoot()
    where = f"MedSSL core: {root}" if root else "MedSSL core: not found (reinstall the extension)"
    reason = support.unsupportedReason()
    return "\n".join(([reason] if reason else []) + [versions, f"Python {platform.python_version()}", where])
