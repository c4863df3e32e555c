"""Typed containers that flow between the layers: raw head outputs (``outputs``) and the annotations of a sample
(``boxes``, ``masks``, ``instances``: NumPy, for the data pipeline)."""

from .boxes import AxisBoxes, RotatedBoxes, polygon_to_rbox, rbox_to_polygon, regularize_le90
from .instances import Instances
from .masks import PolygonMasks, clip_polygon
from .outputs import DetOutputs, RotOutputs, SegOutputs

__all__ = ["AxisBoxes", "DetOutputs", "Instances", "PolygonMasks", "RotOutputs", "RotatedBoxes", "SegOutputs",
           "clip_polygon", "polygon_to_rbox", "rbox_to_polygon", "regularize_le90"]
