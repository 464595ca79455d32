"""The MRML scene writer: frames and instance masks into Slicer sequences, headless or in Slicer.

``lmsfa.scene.tracking`` is pure numpy. Everything else needs the MRML classes (the
``slicer-core`` wheel headless, or Slicer itself), which load only when a name below is
first used, so ``import lmsfa.scene`` stays cheap.

Typical use::

    context = SceneContext.headless()
    writer = SequenceWriter(context, "clip", class_table, model_name="lmsfa-vocalfolds.pt")
    for frame in frames:
        writer.add_frame(frame.index, frame.timestamp_s, frame.rgb, instances)
    writer.finish()
    save_scene_mrb(context, output_folder / "clip.mrb")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SceneContext": "context",
    "TERMINOLOGY_FILE": "context",
    "SequenceWriter": "writer",
    "assign_layers": "writer",
    "segment_id_for": "writer",
    "restore_model_flags": "writer",
    "read_segmentation_sequence": "reader",
    "read_frame_instances": "reader",
    "segment_tag": "reader",
    "commit_edits": "storage",
    "restore_model_flags_in_scene": "storage",
    "save_scene_mrb": "storage",
    "load_scene_mrb": "storage",
    "save_segmentation_nrrd": "storage",
    "load_segmentation_nrrd": "storage",
    "save_frames_seq_nrrd": "storage",
    "IouTracker": "tracking",
    "TerminologyTable": "terminology",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, name)
