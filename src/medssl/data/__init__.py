"""Deterministic preprocessing, its inverse, normalisation, sampling and augmentation."""
