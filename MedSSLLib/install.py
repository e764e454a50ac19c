"""Python dependencies of MedSSL inside Slicer: what is missing, one confirmation, installation, diagnostics.

Nothing is installed at start-up. On first use `planInstall` lists what is missing and `installDependencies`
asks once (one dialog for everything), then installs torch through the PyTorch extension
(``PyTorchUtils.installTorch`` with a version requirement) and medssl with its requirements through
``pip_ensure`` of ``slicer.pydeps`` (current Slicer; ``slicer.packaging`` in the first releases that had it)
or a selective ``slicer.util.pip_install`` walk (older Slicer). torch, SimpleITK and timm are never
installed by pip here. The dialog also lists what the packages pull in that is not installed yet, read from
their metadata when installed, else (medssl) from ``Resources/medssl-requirements.txt``, a copy of the
core's ``pyproject.toml`` dependencies. medssl itself is installed from the copy bundled in the extension
(`BUNDLED_CORE`, put there by CMake), or from ``$MEDSSL_CORE_REQUIREMENT`` / PyPI in a source checkout.
The Slicer functions are passed in (`SlicerInstallers`), so the order and the skip rules are tested
without Slicer.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REQUIREMENTS_FILE = Path(__file__).parent / "Resources" / "requirements.txt"
# The runtime requirements of medssl (its pyproject.toml dependencies), known before medssl is installed.
MEDSSL_REQUIREMENTS_FILE = Path(__file__).parent / "Resources" / "medssl-requirements.txt"
# The medssl core shipped inside the extension (pyproject.toml + src/medssl, copied there by CMake): pip installs
# it from this folder, so the extension needs no medssl release on PyPI. Absent in a source checkout.
BUNDLED_CORE = Path(__file__).parent / "core"
# Where Slicer keeps pip_ensure: slicer.pydeps now, slicer.packaging in the first releases that had it.
PIP_ENSURE_MODULES = ("slicer.pydeps", "slicer.packaging")
TORCH_REQUIREMENT = ">=2.3"
# Never installed by pip: torch comes from PyTorchUtils, SimpleITK is Slicer's own build, timm is only a
# (pinned) requirement of dynamic-network-architectures that medssl does not use, requests ships with Slicer.
SKIP_PACKAGES = ("torch", "torchvision", "torchaudio", "SimpleITK", "timm", "requests")


def _requirement(text: str):
    """``packaging.requirements.Requirement`` (imported on use: nothing non-standard at Slicer start-up)."""
    from packaging.requirements import Requirement

    return Requirement(text)


def _environment(extra: Optional[str] = None) -> dict:
    from packaging.markers import default_environment

    return {**default_environment(), "extra": extra} if extra is not None else default_environment()


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _skipped(name: str) -> bool:
    return _canonical(name) in {_canonical(s) for s in SKIP_PACKAGES}


def readRequirementLines(path: Path) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def bundledCoreVersion(core: Optional[Path] = None) -> Optional[str]:
    """``version = "..."`` of the bundled core's pyproject.toml, or None when no core is bundled."""
    pyproject = (core or BUNDLED_CORE) / "pyproject.toml"
    if not pyproject.is_file():
        return None
    found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
    return found.group(1) if found else None


def coreRequirement(core: Optional[Path] = None) -> Optional[str]:
    """``medssl @ file:///.../core`` for the bundled core, or None (then the requirements file's line is used)."""
    override = os.environ.get("MEDSSL_CORE_REQUIREMENT")
    if override:
        return override
    core = core or BUNDLED_CORE
    return f"medssl @ {core.resolve().as_uri()}" if bundledCoreVersion(core) else None


def loadRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file; the medssl line becomes `coreRequirement` when there is one
    (``$MEDSSL_CORE_REQUIREMENT``, else the core bundled with the extension)."""
    requirements = readRequirementLines(path)
    core = coreRequirement()
    if core:
        requirements = [core if _canonical(_requirement(r).name) == "medssl" else r for r in requirements]
    return requirements


def installedVersion(name: str) -> Optional[str]:
    """Version of an installed distribution, read from its metadata (nothing is imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def isSatisfied(requirement: str) -> bool:
    """The distribution is installed at a version the requirement accepts (URL requirements: installed)."""
    from packaging.requirements import InvalidRequirement

    try:
        req = _requirement(requirement)
    except InvalidRequirement:
        return False
    if req.marker is not None and not req.marker.evaluate(_environment()):
        return True
    version = installedVersion(req.name)
    bundled = bundledCoreVersion()
    if version is not None and bundled and req.url == BUNDLED_CORE.resolve().as_uri():
        return version == bundled  # the bundled core: reinstalled when the extension is updated
    return version is not None and (not req.specifier or req.specifier.contains(version, prereleases=True))


def knownRequirements(name: str) -> list[str]:
    """Runtime requirements of a distribution that apply here (no extras, markers evaluated, markers removed).

    Read from the installed metadata; for medssl before it is installed from ``medssl-requirements.txt``;
    otherwise none are known (pip resolves them during the installation).
    """
    try:
        lines = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        lines = readRequirementLines(MEDSSL_REQUIREMENTS_FILE) if _canonical(name) == "medssl" else []
    known = []
    for line in lines:
        req = _requirement(line)
        if req.marker is None or req.marker.evaluate(_environment(extra="")):
            known.append(str(req).split(";")[0].strip())
    return known


def missingDependencies(requirement: str, seen: set[str]) -> list[str]:
    """What ``requirement`` pulls in (transitively, as far as known) that is not installed at an accepted
    version; `SKIP_PACKAGES` and the names in ``seen`` are left out, and ``seen`` collects the names walked."""
    name = _requirementName(requirement)
    if name is None:
        return []
    missing = []
    for dependency in knownRequirements(name):
        depName = _canonical(_requirement(dependency).name)
        if depName in seen or _skipped(depName):
            continue
        seen.add(depName)
        if not isSatisfied(dependency):
            missing.append(dependency)
        missing += missingDependencies(dependency, seen)
    return missing


@dataclass
class InstallPlan:
    """What the first-use dialog lists."""

    torch: Optional[str] = None  # e.g. "torch>=2.3" when torch is missing or too old
    packages: list[str] = field(default_factory=list)
    reinstall: list[str] = field(default_factory=list)  # "repair": reinstalled with --no-deps
    dependencies: list[tuple[str, str]] = field(default_factory=list)  # (requirement, pulled in by): listed only

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.packages and not self.reinstall

    def describe(self) -> str:
        lines = []
        if self.torch:
            lines.append(f"- {self.torch} (PyTorch, through the PyTorch extension; the build that fits your GPU)")
        lines += [f"- {_shown(package)}" for package in self.packages]
        lines += [f"- {requirement} (required by {by})" for requirement, by in self.dependencies]
        lines += [f"- {_shown(package)} (reinstalled, without touching torch or SimpleITK)" for package in self.reinstall]
        return "\n".join(lines)


def _shown(requirement: str) -> str:
    """How the dialog names a requirement: the bundled core by name and version, not by its file URL."""
    version = bundledCoreVersion()
    if version and coreRequirement() == requirement:
        return f"medssl {version} (the MedSSL core, shipped with this extension)"
    return requirement


def planInstall(requirements: Optional[Sequence[str]] = None, repair: bool = False) -> InstallPlan:
    """Missing pieces; with ``repair`` (the "Install / repair" button) the MedSSL packages are reinstalled too.

    What a missing package pulls in is listed as its dependency; a missing requirement of an installed
    package is installed itself. A broken torch is repaired in the PyTorch Utils module.
    """
    requirements = list(requirements if requirements is not None else loadRequirements())
    torchRequirement = f"torch{TORCH_REQUIREMENT}"
    torch = None if isSatisfied(torchRequirement) else torchRequirement
    missing = [r for r in requirements if not isSatisfied(r)]
    seen = {_canonical(name) for name in map(_requirementName, requirements) if name}
    packages, dependencies = list(missing), []
    for requirement in requirements:
        pulledIn = missingDependencies(requirement, seen)
        if requirement in missing:
            dependencies += [(dependency, _requirementName(requirement)) for dependency in pulledIn]
        else:
            packages += pulledIn
    return InstallPlan(torch, packages, [r for r in requirements if r not in missing] if repair else [], dependencies)


def _requirementName(requirement: str) -> Optional[str]:
    from packaging.requirements import InvalidRequirement

    try:
        return _requirement(requirement).name
    except InvalidRequirement:
        return None


@dataclass
class SlicerInstallers:
    """The Slicer functions `installDependencies` calls (real ones from `slicerInstallers`, fakes in tests)."""

    confirm: Callable[[str, str], bool]
    installTorch: Callable[[str], Any]
    pipInstall: Callable[[str], Any]
    pipEnsure: Optional[Callable[..., Any]] = None  # pip_ensure(list[Requirement], skip_packages=...)


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
    for requirement in plan.reinstall:
        installers.pipInstall(f"--force-reinstall --no-deps {requirement}")
    if plan.packages:
        _installPackages(plan.packages, installers, requester)
    return True


def _installPackages(packages: Sequence[str], installers: SlicerInstallers, requester: str) -> None:
    if installers.pipEnsure is not None:  # Slicer's pip_check reads req.name and req.marker: Requirement objects
        installers.pipEnsure([_requirement(p) for p in packages], skip_packages=list(SKIP_PACKAGES),
                             prompt_install=False, requester=requester)
        return
    done: set[str] = set()
    for package in packages:
        _installWithoutSkipped(package, installers.pipInstall, done)


def _installWithoutSkipped(requirement: str, pipInstall: Callable[[str], Any], done: set[str]) -> None:
    """Older Slicer: install with ``--no-deps``, then its own requirements the same way, skipping SKIP_PACKAGES."""
    name = _requirement(requirement).name
    if _canonical(name) in done or _skipped(name):
        return
    done.add(_canonical(name))
    if not isSatisfied(requirement):
        pipInstall(f"--no-deps {requirement}")
        importlib.invalidate_caches()  # pip ran in another process: make importlib.metadata look again
        if installedVersion(name) is None:
            raise RuntimeError(f"{name} is still not installed after pip ran; see pip's output in the Python console")
    for dependency in knownRequirements(name):
        _installWithoutSkipped(dependency, pipInstall, done)


def findPipEnsure(importModule: Callable[[str], Any] = importlib.import_module) -> Optional[Callable[..., Any]]:
    """Slicer's ``pip_ensure`` (`PIP_ENSURE_MODULES`, first found), or None on Slicer versions without it."""
    for moduleName in PIP_ENSURE_MODULES:
        try:
            function = getattr(importModule(moduleName), "pip_ensure", None)
        except ImportError:
            continue
        if callable(function):
            return function
    return None


def slicerInstallers() -> SlicerInstallers:
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
        pipInstall=slicer.util.pip_install,
        pipEnsure=findPipEnsure())


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
    """Versions from package metadata only (before medssl is installed or when ``medssl info`` fails)."""
    names = ("medssl", "torch", "monai", "SimpleITK", "dynamic-network-architectures")
    versions = ", ".join(f"{name} {installedVersion(name) or 'not installed'}" for name in names)
    return f"{versions}\nPython {platform.python_version()}"
