"""The ``medssl`` command line (thin wrappers over the Python API)."""
