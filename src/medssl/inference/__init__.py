"""Inference: sliding window, devices and the Predictor."""
