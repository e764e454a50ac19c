"""MedSSLLib: the Qt-free part of the MedSSL Slicer extension, shared by MedSSLSegment and MedSSLTrain.

- `events`: parse ``medssl --progress json`` lines, track progress, ETA, loss and Dice curves;
- `process`: run a command in its own process group, poll its output, cancel the whole tree;
- `commands`: medssl command lines (predict, finetune, weights, info) and how to launch medssl;
- `jobs`: one command as a job with callbacks (the Logic never touches widgets);
- `packages`, `catalog`: local model packages and the pretrained-weight catalog, read without torch;
- `nodeio`: volume/segmentation nodes <-> files through Slicer's storage nodes;
- `segment_logic`, `train_logic`: the modules' logic, usable from Slicer's Python console;
- `bundled_core`: where the medssl core is (bundled or the clone), put first on sys.path here;
- `install`: first-use dependency installation and diagnostics; `support`: which Slicer MedSSL runs on;
- `segment_widget`, `train_widget` (Qt, inside Slicer only): the two module panels, over
  `parameter_binding` (the parameter-node lifecycle both share) and `slicerui` (shared Qt helpers);
- `testing`: helpers for the test suite and the self-tests.

Nothing here imports torch or medssl at import time.
"""

from .bundled_core import activate

activate()  # the medssl core is used from its folder, never pip-installed: first on sys.path
