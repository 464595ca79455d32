"""LMSF-A instance segmentation of endoscopic video: the core package.

Pure Python (no Qt, no ``slicer.app``): the network, frame sources, inference,
the MRML scene writer, datasets, training, evaluation, exports and the ``lmsfa``
command line. The 3D Slicer module and the command line run this same code.
"""

__version__ = "0.1.0"
