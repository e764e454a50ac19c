"""Weights as data: the model package, the pretrained-weight catalog, downloads and converters."""
