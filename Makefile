# MedSSL: two commands do all the set-up on a fresh machine.
#   make demo   - create .venv, install medssl + the sample scans, pretrain, fine-tune and segment (no network afterwards)
#   make test   - the same set-up plus test tools, then the whole test suite
#   make slicer-zip - dist/MedSSL-<version>-slicer.zip: the Slicer extension without a build (Python only)
# Variables: PYTHON (interpreter for the venv, default python3), VENV (default .venv).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PIPC := $(PIP) install -q -c constraints.txt
SAMPLE_DATA := /usr/share/mricron/templates/aal.nii.gz /usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz /usr/bin/dciodvfy

.PHONY: demo test install install-dev data bench clean slicer-zip

demo: install data
	$(PY) -m medssl.demo --out demo_out

test: install-dev data
	HF_HUB_OFFLINE=1 $(PY) -m pytest Testing -q -p no:cacheprovider --durations=25

bench: install-dev data
	$(PY) benchmarks/predict_vs_monai.py

install: $(VENV)/.medssl-installed

$(VENV)/.medssl-installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIPC) "torch==2.13.0"
	# [openvino]: the CPU runtime --runtime auto picks on x86 (openvino + onnx; neither pulls torch)
	$(PIPC) -e ".[openvino]"
	# dynamic-network-architectures: --no-deps, its timm pin would pull a CUDA torch and a broken torchvision
	$(PIP) install -q --no-deps "dynamic-network-architectures==0.4.4"
	# unlabelled scans for the demo's pretraining: nibabel's anatomical test image and nilearn's bundled
	# MNI152 template (nilearn with --no-deps: only its data files are read, no sklearn/pandas needed)
	$(PIPC) "nibabel>=5"
	$(PIP) install -q --no-deps "nilearn==0.14.1"
	touch $@

install-dev: install $(VENV)/.medssl-dev-installed

$(VENV)/.medssl-dev-installed: pyproject.toml constraints.txt
	$(PIPC) -e ".[dev,dicom,openvino]"
	# upstream reference implementations for the equivalence tests (Testing/upstream.py): MONAI 1.3.0, the version
	# VoCo trained with, beside (not over) the project's MONAI; imported only by the tests' child processes
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/reference/monai-1.3.0 "monai==1.3.0"
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/reference/pymic-0.6.2 "PyMIC==0.6.2"
	touch $@

# Real scans for the demo and the tests: Debian packages mricron-data (Colin27 + AAL) and
# insighttoolkit5-examples (ITK KmeansTest T1); dicom3tools (dciodvfy) validates the DICOM SEG the tests write.
# Nothing is committed to this repository.
data:
	@if ls $(SAMPLE_DATA) >/dev/null 2>&1; then echo "sample scans present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends mricron-data insighttoolkit5-examples dicom3tools; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends mricron-data insighttoolkit5-examples dicom3tools; \
	else echo "install the Debian packages mricron-data, insighttoolkit5-examples and dicom3tools (needs root)"; exit 1; fi

# The extension as the CMake install lays it out (file lists read from the CMakeLists.txt files); no venv needed.
slicer-zip:
	$(PYTHON) Utilities/slicer_zip.py --out dist

clean:
	rm -rf $(VENV) demo_out .pytest_cache
