"""Frame sources: video files, frame folders and DICOM video as streams of upright RGB frames.

``open_source(path, first=0, last=None, stride=1, window=None)`` opens any of them; see
:class:`~lmsfa.sources.base.FrameSource` for the stream interface and
:class:`~lmsfa.sources.base.Frame` for what each frame carries.
"""

from .base import COLOR_ORDER, Frame, FrameSource, SourceInfo
from .opener import open_source

__all__ = ["COLOR_ORDER", "Frame", "FrameSource", "SourceInfo", "open_source"]
