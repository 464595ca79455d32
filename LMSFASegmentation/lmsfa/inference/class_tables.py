"""Class tables given by the user, checked against the model's own table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import yaml

from ..classes import ClassTable
from ..errors import InputError

ClassTableLike = Union[ClassTable, Sequence[str], str, os.PathLike]


def read_class_table(value: ClassTableLike) -> ClassTable:
    """Build a :class:`ClassTable` from a table, a list of names or a file.

    Files: a YOLO ``data.yaml`` (``names`` as a list or an index-to-name mapping) or a JSON
    file in the :meth:`ClassTable.to_dict` layout (``{"classes": [{"name", "color"}, ...]}``).
    """
    if isinstance(value, ClassTable):
        return value
    if isinstance(value, (str, os.PathLike)):
        return _read_class_table_file(Path(value))
    if isinstance(value, Sequence) and all(isinstance(name, str) for name in value):
        return ClassTable.from_names(list(value))
    raise InputError(
        f"invalid class table {value!r}: give a ClassTable, a list of class names, a data.yaml "
        "or a class-table .json file"
    )


def _read_class_table_file(path: Path) -> ClassTable:
    from ..training.readers.yolo import yolo_names

    if not path.is_file():
        raise InputError(f"class table file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise InputError(f"{path}: expected a mapping with 'names', got {type(data).__name__}")
            return ClassTable.from_names(yolo_names(data, path))
        if suffix == ".json":
            return ClassTable.from_dict(json.loads(text))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise InputError(f"could not read the class table {path}: {error}") from error
    raise InputError(f"unsupported class table file {path}: use a data.yaml (.yaml) or a class-table .json")


def _same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def reconcile_class_tables(
    model_table: Optional[ClassTable],
    user_table: Optional[ClassTable],
    model_source: str,
    nc: Optional[int] = None,
) -> ClassTable:
    """Return the class table to label results with, or raise if the two tables disagree.

    Names are compared in order, ignoring case and surrounding spaces. When both tables
    agree, the user's table wins (it may carry colours and terminology codes). ``nc`` is the
    number of classes the network outputs, when known.
    """
    if model_table is not None and user_table is not None:
        same = len(model_table) == len(user_table) and all(
            _same_name(a, b) for a, b in zip(model_table.names, user_table.names)
        )
        if not same:
            raise InputError(
                "the given class table does not match the model, so results would be mislabelled.\n"
                f"  model ({model_source}), {len(model_table)} classes: {model_table.names}\n"
                f"  given, {len(user_table)} classes: {user_table.names}\n"
                "Give the class table the model was trained with, or leave it out to use the model's own"
            )
    table = user_table if user_table is not None else model_table
    if table is None:
        raise InputError(
            f"{model_source} carries no class names: give class_table (a data.yaml, a class-table .json "
            "or a list of names) in class-index order"
        )
    if nc is not None and len(table) != nc:
        raise InputError(
            f"the model ({model_source}) outputs {nc} classes but the class table lists {len(table)}: {table.names}"
        )
    return table
