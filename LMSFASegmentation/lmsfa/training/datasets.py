"""Training data sets: one entry point, :func:`open_dataset`, for every supported source.

Sources and how :func:`open_dataset` recognises them:

* a COCO instance JSON file (``.json``);
* an Ultralytics YOLO-seg ``data.yaml`` (a YAML file with ``names``), or a folder holding one;
* a data set description YAML with a ``format`` key (``coco``, ``yolo``, ``label_maps`` or
  ``seg_nrrd``), see :func:`open_description`;
* a folder with ``images/``, ``labels/`` (semantic label maps) and a class table file
  ``classes.yaml``, ``classes.yml``, ``classes.json`` or ``classes.txt``;
* a ``.seg.nrrd`` file, or a folder of them, each beside its frame image;
* a Slicer scene bundle (``.mrb``) with corrected frames, as ``lmsfa segment`` writes it;
* a folder holding ``<split>.json`` or ``instances_<split>.json`` (COCO).

Every reader yields :class:`Sample` objects; see ``readers/base.py`` for the coordinate frame.

A flip map names the class that each side-specific class becomes in a mirror image. It may
be a mapping (names or indices), a list of pairs, or ``"fdi"`` for classes named by FDI
tooth numbers (``"tooth 11"``), whose quadrants 1 and 2, 3 and 4, 5 and 6, 7 and 8 swap.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ..classes import ClassTable
from ..errors import InputError
from .readers.base import InstanceDataset, Sample, boxes_from_masks
from .readers.coco import CocoDataset
from .readers.labelmap import LabelMapDataset
from .readers.mrb import MRB_SUFFIX, MrbDataset
from .readers.segnrrd import SEG_SUFFIX, SegNrrdDataset
from .readers.yolo import YoloSegDataset

__all__ = [
    "Sample",
    "InstanceDataset",
    "CocoDataset",
    "YoloSegDataset",
    "LabelMapDataset",
    "SegNrrdDataset",
    "open_dataset",
    "open_description",
    "resolve_flip_map",
    "read_class_values",
    "boxes_from_masks",
]

logger = logging.getLogger(__name__)

FlipMapSpec = Union[str, dict, Sequence[Sequence[Any]], None]
CLASS_TABLE_FILES = ("classes.yaml", "classes.yml", "classes.json", "classes.txt")
FORMATS = ("coco", "yolo", "label_maps", "seg_nrrd")
_FDI_NUMBER = re.compile(r"(?<!\d)([1-8])([1-9])$")
_FDI_MIRROR_QUADRANT = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}


def resolve_flip_map(spec: FlipMapSpec, class_table: ClassTable) -> Optional[dict[int, int]]:
    """Turn a flip map given by names, indices, pairs or ``"fdi"`` into ``{class index: mirror index}``.

    The result is symmetric and lists only classes that change. A pair given one way is
    completed the other way. Raises :class:`InputError` for an unknown class or a class
    mapped to two different classes. Returns ``None`` for ``None``.
    """
    if spec is None:
        return None
    names = class_table.names
    if isinstance(spec, str):
        if spec.lower() != "fdi":
            raise InputError(f"flip map {spec!r} is not understood; give pairs of classes or 'fdi'")
        pairs = _fdi_pairs(names)
    elif isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for pair in spec:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InputError(f"flip map entry {pair!r} must be a pair [class, mirror class]")
            pairs.append(tuple(pair))

    flip: dict[int, int] = {}
    for first, second in pairs:
        a = _class_index(first, names)
        b = _class_index(second, names)
        if a == b:
            continue
        for source, target in ((a, b), (b, a)):
            if flip.get(source, target) != target:
                raise InputError(
                    f"flip map sends class {names[source]!r} to both {names[flip[source]]!r} and {names[target]!r}"
                )
            flip[source] = target
    return flip


def _fdi_pairs(names: list[str]) -> list[tuple[str, str]]:
    by_number = {}
    for name in names:
        match = _FDI_NUMBER.search(name)
        if match:
            by_number[(int(match.group(1)), int(match.group(2)))] = name
    if not by_number:
        raise InputError(f"flip map 'fdi' needs class names ending in an FDI tooth number such as 'tooth 11'; got {names[:5]}...")
    pairs = []
    for (quadrant, tooth), name in by_number.items():
        mirror = by_number.get((_FDI_MIRROR_QUADRANT[quadrant], tooth))
        if mirror is None:
            raise InputError(
                f"flip map 'fdi': class {name!r} has no mirror class with FDI number "
                f"{_FDI_MIRROR_QUADRANT[quadrant]}{tooth}"
            )
        pairs.append((name, mirror))
    return pairs


def _class_index(value: Any, names: list[str]) -> int:
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    raise InputError(f"flip map class {value!r} is neither a class name nor a class index 0..{len(names) - 1}")


def read_class_values(path: Path) -> dict[int, str]:
    """Read a label-map class table: label value to class name.

    A YAML or JSON file contains a mapping ``{1: "vocal folds", 2: ...}``, at the top level
    or under ``classes``. A ``.txt`` file contains one ``value name`` line per class.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class table file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        table = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            value, _, name = line.strip().partition(" ")
            if not value.isdigit() or not name.strip():
                raise InputError(f"{path}:{number}: expected 'value name', got {line!r}")
            table[value] = name.strip()
    else:
        try:
            table = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise InputError(f"cannot parse class table {path}: {error}") from error
        if isinstance(table, dict) and isinstance(table.get("classes"), dict):
            table = table["classes"]
    return _class_values(table, path)


def _class_values(table: Any, source: Path) -> dict[int, str]:
    if not isinstance(table, dict) or not table:
        raise InputError(f"{source}: the class table must map label values to class names, e.g. {{1: vocal folds}}")
    values = {}
    for key, name in table.items():
        try:
            value = int(key)
        except (TypeError, ValueError) as error:
            raise InputError(f"{source}: label value {key!r} is not an integer") from error
        if value < 0:
            raise InputError(f"{source}: label value {value} is negative")
        values[value] = str(name)
    return values


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(f"cannot parse {path}: {error}") from error
    if not isinstance(data, dict):
        raise InputError(f"{path}: a data set YAML must be a mapping of keys to values")
    return data


def _relative(base: Path, value: Any) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else base / path


def _finish(dataset: InstanceDataset, flip_spec: FlipMapSpec, side_specific: Optional[bool]) -> InstanceDataset:
    """Attach the resolved flip map and the side-specific flag to a reader."""
    dataset.flip_map = resolve_flip_map(flip_spec, dataset.class_table)
    dataset.side_specific = bool(side_specific) if side_specific is not None else dataset.flip_map is not None
    if dataset.side_specific and not dataset.flip_map:
        logger.warning(
            "the data set declares side-specific classes but gives no flip map: training will not flip its images"
        )
    return dataset


def open_description(path: Path, split: str = "train", **overrides: Any) -> InstanceDataset:
    """Open a data set described by a YAML file.

    Keys common to all formats: ``format`` (``coco``, ``yolo``, ``label_maps``,
    ``seg_nrrd``; a file without ``format`` but with ``names`` is an Ultralytics
    ``data.yaml``), ``flip_map`` and ``side_specific``. Relative paths are relative to the
    YAML file's folder. Per format:

    * ``coco``: ``<split>: file.json``, optional ``images: folder``.
    * ``yolo``: the Ultralytics keys ``path``, ``train``/``val``/``test``, ``names``.
    * ``label_maps``: ``images``, ``labels``, ``classes`` (label value to name, or a class
      table file), optional ``min_area`` (pixels, default 64), ``background`` (default
      ``[0]``) and ``<split>``: a list of sub-folders or glob patterns under ``labels``.
    * ``seg_nrrd``: ``<split>``: a folder or a list of ``.seg.nrrd`` files, optional ``names``.
    """
    path = Path(path)
    data = _load_yaml(path)
    base = path.parent
    fmt = str(data.get("format", "yolo" if "names" in data else "")).lower()
    if fmt not in FORMATS:
        raise InputError(f"{path}: 'format' must be one of {', '.join(FORMATS)}, got {data.get('format')!r}")
    flip_spec = overrides.get("flip_map", data.get("flip_map"))
    side_specific = overrides.get("side_specific", data.get("side_specific"))

    if fmt == "yolo":
        dataset: InstanceDataset = YoloSegDataset(path, data, split)
    elif fmt == "coco":
        if not data.get(split):
            raise InputError(f"{path}: no '{split}' entry naming the COCO JSON file of that split")
        image_root = overrides.get("image_root") or (_relative(base, data["images"]) if data.get("images") else None)
        dataset = CocoDataset(_relative(base, data[split]), image_root)
    elif fmt == "label_maps":
        classes = data.get("classes")
        if isinstance(classes, str):
            class_values = read_class_values(_relative(base, classes))
        else:
            class_values = _class_values(classes, path)
        for key in ("images", "labels"):
            if not data.get(key):
                raise InputError(f"{path}: a label_maps description needs '{key}', the folder of the {key}")
        include = data.get(split)
        if include is None and any(key in data for key in ("train", "val", "test")):
            raise InputError(f"{path} has no '{split}' split")
        dataset = LabelMapDataset(
            _relative(base, data["images"]),
            _relative(base, data["labels"]),
            class_values,
            min_area=int(overrides.get("min_area") or data.get("min_area", 64)),
            include=[include] if isinstance(include, str) else include,
            background=data.get("background", [0]),
        )
    else:
        entry = data.get(split)
        if not entry:
            raise InputError(f"{path}: no '{split}' entry listing the .seg.nrrd files of that split")
        entries = entry if isinstance(entry, list) else [entry]
        seg_paths: list[Path] = []
        for item in entries:
            seg_paths.extend(_seg_files(_relative(base, item)))
        dataset = SegNrrdDataset(seg_paths, overrides.get("class_names") or data.get("names"))
    return _finish(dataset, flip_spec, side_specific)


def _seg_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith(SEG_SUFFIX))
        if not files:
            raise InputError(f"no {SEG_SUFFIX} files in {path}")
        return files
    if path.is_file():
        return [path]
    raise InputError(f"segmentation file or folder not found: {path}")


def open_dataset(
    source: Union[str, Path],
    split: str = "train",
    *,
    image_root: Optional[Path] = None,
    class_names: Optional[Sequence[str]] = None,
    flip_map: FlipMapSpec = None,
    side_specific: Optional[bool] = None,
    min_area: Optional[int] = None,
) -> InstanceDataset:
    """Open a training data set, recognising its format from the path (see the module docstring).

    ``split`` selects ``train``, ``val`` or ``test`` where the source has splits.
    ``image_root`` overrides the image folder of a COCO file. ``class_names`` fixes the
    classes of ``.seg.nrrd`` data. ``flip_map`` and ``side_specific`` override what the
    source declares; ``side_specific`` defaults to whether a flip map is given.
    ``min_area`` (pixels) overrides the smallest connected region kept as an instance from
    a label map. Raises :class:`InputError` when the source is missing or not recognised.
    """
    path = Path(source)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("image_root", image_root), ("class_names", class_names), ("flip_map", flip_map),
            ("side_specific", side_specific), ("min_area", min_area),
        )
        if value is not None
    }
    if not path.exists():
        raise InputError(f"data set not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _finish(CocoDataset(path, image_root), flip_map, side_specific)
        if path.suffix.lower() in (".yaml", ".yml"):
            return open_description(path, split, **overrides)
        if path.name.lower().endswith(SEG_SUFFIX):
            return _finish(SegNrrdDataset([path], class_names), flip_map, side_specific)
        if path.suffix.lower() == MRB_SUFFIX:
            return _finish(MrbDataset(path), flip_map, side_specific)
        raise InputError(
            f"{path} is not a recognised data set file (.json, .yaml, .yml, {SEG_SUFFIX} or {MRB_SUFFIX})"
        )
    return _open_folder(path, split, overrides)


def _open_folder(path: Path, split: str, overrides: dict[str, Any]) -> InstanceDataset:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return open_description(path / name, split, **overrides)
    flip_spec = overrides.get("flip_map")
    side_specific = overrides.get("side_specific")
    class_files = [path / name for name in CLASS_TABLE_FILES if (path / name).is_file()]
    has_label_folders = (path / "labels").is_dir() and (path / "images").is_dir()
    if has_label_folders and class_files:
        dataset: InstanceDataset = LabelMapDataset(
            path / "images", path / "labels", read_class_values(class_files[0]),
            min_area=int(overrides.get("min_area") or 64),
        )
        return _finish(dataset, flip_spec, side_specific)
    seg_files = sorted(p for p in path.iterdir() if p.name.lower().endswith(SEG_SUFFIX))
    if seg_files:
        return _finish(SegNrrdDataset(seg_files, overrides.get("class_names")), flip_spec, side_specific)
    for name in (f"{split}.json", f"instances_{split}.json"):
        if (path / name).is_file():
            return _finish(CocoDataset(path / name, overrides.get("image_root")), flip_spec, side_specific)
    if has_label_folders:
        if any((path / "labels").rglob("*.txt")):
            raise InputError(
                f"{path} looks like a YOLO-seg data set (labels/*.txt) but has no data.yaml naming its classes and splits"
            )
        raise InputError(
            f"{path} has images/ and labels/ but no class table; add one of {', '.join(CLASS_TABLE_FILES)} "
            "mapping each label value to a class name"
        )
    raise InputError(
        f"{path} is not a recognised data set folder: expected data.yaml, images/ + labels/ + a class table, "
        f"{SEG_SUFFIX} files, or {split}.json / instances_{split}.json"
    )
