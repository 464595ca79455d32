"""Class tables: names, display colours and optional SNOMED CT terminology per class.

A class table travels inside every checkpoint, so a model always names its own classes.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from .errors import InputError


@dataclass(frozen=True)
class SnomedCode:
    """One SNOMED CT coded concept, as DICOM and Slicer terminology files store it."""

    code_value: str
    code_meaning: str
    coding_scheme: str = "SCT"


@dataclass(frozen=True)
class ClassInfo:
    """One model class. ``color`` is RGB in 0..255."""

    name: str
    color: tuple[int, int, int]
    category: Optional[SnomedCode] = None
    type: Optional[SnomedCode] = None


@dataclass
class ClassTable:
    """Ordered classes; the position in ``classes`` is the model's class index."""

    classes: list[ClassInfo] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> ClassInfo:
        return self.classes[index]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "ClassTable":
        """Build a table with evenly spaced hues for classes that have no colour yet."""
        if len(set(names)) != len(names):
            raise InputError(f"class names must be unique, got {list(names)}")
        return cls([ClassInfo(name, default_color(i, len(names))) for i, name in enumerate(names)])

    def to_dict(self) -> dict:
        """Plain types only (str, int, list, dict), so ``torch.load(weights_only=True)`` accepts it."""
        out = []
        for info in self.classes:
            entry = {"name": info.name, "color": list(info.color)}
            if info.category is not None:
                entry["category"] = asdict(info.category)
            if info.type is not None:
                entry["type"] = asdict(info.type)
            out.append(entry)
        return {"classes": out}

    @classmethod
    def from_dict(cls, data: dict) -> "ClassTable":
        try:
            entries = data["classes"]
            classes = []
            for entry in entries:
                color = tuple(int(v) for v in entry["color"])
                if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                    raise InputError(f"class {entry['name']!r}: colour must be 3 values in 0..255, got {color}")
                category = SnomedCode(**entry["category"]) if entry.get("category") else None
                type_ = SnomedCode(**entry["type"]) if entry.get("type") else None
                classes.append(ClassInfo(str(entry["name"]), color, category, type_))
        except (KeyError, TypeError) as error:
            raise InputError(f"invalid class table {data!r}: {error}") from error
        table = cls(classes)
        if len(set(table.names)) != len(table.names):
            raise InputError(f"class names must be unique, got {table.names}")
        return table


def default_color(index: int, count: int) -> tuple[int, int, int]:
    """Return a saturated colour with hue spread evenly over ``count`` classes."""
    hue = (index / max(count, 1)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))
