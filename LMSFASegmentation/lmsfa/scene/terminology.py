"""Look up a model class in the module's Slicer terminology file (``.term.json``).

A class is found by its name, compared case-insensitively with each type's
``3dSlicerLabel``, ``CodeMeaning`` and the ``lmsfaClassNameAliases`` list (a field of this
project that Slicer ignores). A class whose :class:`~lmsfa.classes.ClassInfo` carries its
own SNOMED CT category and type uses those codes instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..classes import ClassInfo, SnomedCode
from ..errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TerminologyTerm:
    """One category and type pair of a terminology context."""

    context_name: str
    category: SnomedCode
    type: SnomedCode
    color: Optional[tuple[int, int, int]] = None

    def serialize(self) -> str:
        """Return the entry as Slicer stores it in a segment's ``TerminologyEntry`` tag."""
        import slicer

        # Arguments: context, category triple, type triple, type modifier triple, then the
        # anatomic region context and region and region modifier triples (all empty here).
        return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
            self.context_name,
            self.category.code_value, self.category.coding_scheme, self.category.code_meaning,
            self.type.code_value, self.type.coding_scheme, self.type.code_meaning,
            "", "", "",
            "", "", "", "",
            "", "", "",
        )


class TerminologyTable:
    """The category and type pairs of one ``.term.json``, indexed by lower-case class name."""

    def __init__(self, context_name: str, terms_by_name: dict[str, TerminologyTerm]):
        self.context_name = context_name
        self._terms = terms_by_name

    @classmethod
    def from_file(cls, path: Path) -> "TerminologyTable":
        """Read a Slicer terminology context file.

        Raises:
            InputError: the file is missing, is not JSON, or lacks the Slicer fields.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            context_name = data["SegmentationCategoryTypeContextName"]
            categories = data["SegmentationCodes"]["Category"]
        except FileNotFoundError as error:
            raise InputError(f"terminology file not found: {path}") from error
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise InputError(f"invalid Slicer terminology file {path}: {error}") from error

        terms: dict[str, TerminologyTerm] = {}
        for category in categories:
            category_code = _code(category)
            for type_entry in category.get("Type", []):
                color = type_entry.get("recommendedDisplayRGBValue")
                term = TerminologyTerm(
                    context_name, category_code, _code(type_entry), tuple(int(v) for v in color) if color else None
                )
                names = [type_entry.get("3dSlicerLabel", ""), type_entry["CodeMeaning"]]
                names += type_entry.get("lmsfaClassNameAliases", [])
                for name in names:
                    if name:
                        terms.setdefault(name.strip().lower(), term)
        return cls(context_name, terms)

    def find(self, class_info: ClassInfo) -> Optional[TerminologyTerm]:
        """Return the term for a class, or ``None`` when neither its codes nor its name are known.

        A class with its own category and type codes gets them, with the context name of
        this table, so that Slicer's terminology selector can show the context.
        """
        if class_info.category is not None and class_info.type is not None:
            known = self._terms.get(class_info.name.strip().lower())
            return TerminologyTerm(
                self.context_name, class_info.category, class_info.type, known.color if known else None
            )
        return self._terms.get(class_info.name.strip().lower())


def _code(entry: dict) -> SnomedCode:
    return SnomedCode(
        code_value=str(entry["CodeValue"]),
        code_meaning=str(entry["CodeMeaning"]),
        coding_scheme=str(entry["CodingSchemeDesignator"]),
    )
