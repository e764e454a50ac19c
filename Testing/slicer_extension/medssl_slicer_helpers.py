"""Small helpers shared by the Slicer-extension tests."""

import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PACKAGE_LABELS = [  # labels of the tiny test model package (with terminology codes)
    {"value": 1, "name": "liver", "color": [0.9, 0.4, 0.3],
     "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}},
    {"value": 2, "name": "spleen", "color": [0.2, 0.6, 0.9],
     "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "78961009", "Spleen"]}},
]


def recordedArgs(command) -> list:
    """Arguments fake_medssl.py received in its last run."""
    return json.loads(Path(command.env["FAKE_MEDSSL_RECORD"]).read_text())


def processGone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (zombies count as gone). psutil, not /proc: on a system without /proc
    (macOS) a missing /proc file would make every process look gone."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def sceneSnapshot(scene) -> list:
    """IDs of all nodes, to check that a scene was left unchanged."""
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


def obliqueLeftHanded() -> np.ndarray:
    """IJK->RAS of an oblique, left-handed (det < 0), anisotropic grid."""
    from MedSSLLib.testing import ijkToRasMatrix, rotation

    return ijkToRasMatrix(rotation(0.3, -0.2, 0.5) @ np.diag([1, 1, -1]), (0.7, 1.3, 3.0), (120.5, -80.25, 33.0))


def obliqueRightHanded() -> np.ndarray:
    from MedSSLLib.testing import ijkToRasMatrix, rotation

    return ijkToRasMatrix(rotation(-0.4, 0.25, 0.1), (1.1, 0.9, 2.0), (-30.0, 12.5, -7.25))


def waitFor(predicate, timeout: float = 20.0, poll=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def posix() -> bool:
    return os.name != "nt"
