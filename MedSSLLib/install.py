"""Python dependencies of MedSSL inside Slicer: what is missing, one confirmation, installation, diagnostics.

Nothing is installed at start-up. On first use `planInstall` lists what is missing and `installDependencies`
asks once (one dialog for everything), then installs torch through the PyTorch extension
(``PyTorchUtils.installTorch`` with a version requirement) and medssl with its requirements through
``slicer.packaging.pip_ensure`` (Slicer >= 5.11) or a selective ``slicer.util.pip_install`` walk (older
Slicer). torch, SimpleITK and timm are never installed by pip here. The Slicer functions are passed in
(`SlicerInstallers`), so the order and the skip rules are tested without Slicer.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REQUIREMENTS_FILE = Path(__file__).parent / "Resources" / "requirements.txt"
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


def loadRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file; ``$MEDSSL_CORE_REQUIREMENT`` replaces the medssl line."""
    lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    requirements = [line for line in lines if line]
    override = os.environ.get("MEDSSL_CORE_REQUIREMENT")
    if override:
        requirements = [override if _canonical(_requirement(r).name) == "medssl" else r for r in requirements]
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
    return version is not None and (not req.specifier or req.specifier.contains(version, prereleases=True))


@dataclass
class InstallPlan:
    """What the first-use dialog lists."""

    torch: Optional[str] = None  # e.g. "torch>=2.3" when torch is missing or too old
    packages: list[str] = field(default_factory=list)
    reinstall: list[str] = field(default_factory=list)  # "repair": reinstalled with --no-deps

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.packages and not self.reinstall

    def describe(self) -> str:
        lines = []
        if self.torch:
            lines.append(f"- {self.torch} (PyTorch, through the PyTorch extension; the build that fits your GPU)")
        lines += [f"- {package}" for package in self.packages]
        lines += [f"- {package} (reinstalled, without touching torch or SimpleITK)" for package in self.reinstall]
        return "\n".join(lines)


def planInstall(requirements: Optional[Sequence[str]] = None, repair: bool = False) -> InstallPlan:
    """Missing pieces; with ``repair`` (the "Install / repair" button) the MedSSL packages are reinstalled too.

    A broken torch is repaired in the PyTorch Utils module (uninstall, then install the right build).
    """
    requirements = list(requirements if requirements is not None else loadRequirements())
    torchRequirement = f"torch{TORCH_REQUIREMENT}"
    torch = None if isSatisfied(torchRequirement) else torchRequirement
    missing = [r for r in requirements if not isSatisfied(r)]
    return InstallPlan(torch, missing, [r for r in requirements if r not in missing] if repair else [])


@dataclass
class SlicerInstallers:
    """The Slicer functions `installDependencies` calls (real ones from `slicerInstallers`, fakes in tests)."""

    confirm: Callable[[str, str], bool]
    installTorch: Callable[[str], Any]
    pipInstall: Callable[[str], Any]
    pipEnsure: Optional[Callable[..., Any]] = None


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
    if installers.pipEnsure is not None:
        installers.pipEnsure(list(packages), skip_packages=list(SKIP_PACKAGES), prompt_install=False,
                             requester=requester)
        return
    done: set[str] = set()
    for package in packages:
        _installWithoutSkipped(package, installers.pipInstall, done)


def _installWithoutSkipped(requirement: str, pipInstall: Callable[[str], Any], done: set[str]) -> None:
    """Older Slicer: install with ``--no-deps``, then its own requirements the same way, skipping SKIP_PACKAGES."""
    req = _requirement(requirement)
    name = _canonical(req.name)
    if name in done or name in {_canonical(s) for s in SKIP_PACKAGES}:
        return
    done.add(name)
    if not isSatisfied(requirement):
        pipInstall(f"--no-deps {requirement}")
    for dependency in metadata.requires(req.name) or []:
        dep = _requirement(dependency)
        if dep.marker is not None and not dep.marker.evaluate(_environment(extra="")):
            continue
        _installWithoutSkipped(str(dep).split(";")[0].strip(), pipInstall, done)


def slicerInstallers() -> SlicerInstallers:
    """The real functions inside the Slicer application (the PyTorch extension must be installed)."""
    import slicer

    try:
        import PyTorchUtils
    except ImportError as exc:
        raise RuntimeError("MedSSL needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, "
                           "restart Slicer and try again") from exc
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    packaging = getattr(slicer, "packaging", None)
    return SlicerInstallers(
        confirm=lambda text, title: slicer.util.confirmOkCancelDisplay(text, title),
        installTorch=lambda requirement: torchLogic.installTorch(askConfirmation=False,
                                                                 torchVersionRequirement=requirement),
        pipInstall=slicer.util.pip_install,
        pipEnsure=getattr(packaging, "pip_ensure", None))


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
