"""napari-lggseg: human-in-the-loop segmentation of lower-grade glioma in brain MRI.

Kept light on purpose: importing the package imports neither torch nor Qt.
"""

__version__ = "0.1.0"
