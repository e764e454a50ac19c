"""Image and label IO (SimpleITK), geometry conventions and atomic writes."""
from .geometry import Grid, array_ijk, image_from_ijk, same_grid
from .labels import LabelMap, read_label_map, write_label_map
from .volume_io import read_image, write_image

__all__ = ["Grid", "array_ijk", "image_from_ijk", "same_grid", "LabelMap", "read_label_map", "write_label_map",
           "read_image", "write_image"]
