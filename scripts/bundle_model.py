"""Bundle a trained checkpoint as the default model: colours and SNOMED CT codes, ONNX, SHA-256.

    python scripts/bundle_model.py RUN/best.pt --name lmsfa-n-vocalfolds --provenance extra.json

Each class gets the colour and SNOMED CT category and type of the module's terminology file
(matched by class name). Writes ``Resources/Models/<name>.pt``, ``<name>.onnx`` (dynamic input
size) and updates ``Resources/Models/models.json`` with both SHA-256 digests.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from lmsfa.classes import ClassInfo, ClassTable, SnomedCode
from lmsfa.fileio import make_shareable
from lmsfa.model import export_onnx, load_checkpoint, save_checkpoint, sha256_file
from lmsfa.scene.context import TERMINOLOGY_FILE

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "Resources" / "Models"


def terminology_classes(names: list[str], path: Path = TERMINOLOGY_FILE) -> ClassTable:
    """Class table whose colours and codes come from the terminology file's entries."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    entries = {}
    for category in data["SegmentationCodes"]["Category"]:
        for term in category["Type"]:
            labels = [term.get("3dSlicerLabel", term["CodeMeaning"])] + term.get("lmsfaClassNameAliases", [])
            for label in labels:
                entries[label.lower()] = (category, term)
    classes = []
    for name in names:
        if name.lower() not in entries:
            raise SystemExit(f"class {name!r} is not in {path}: add a terminology entry first")
        category, term = entries[name.lower()]
        classes.append(ClassInfo(
            name=name,
            color=tuple(int(v) for v in term["recommendedDisplayRGBValue"]),
            category=SnomedCode(category["CodeValue"], category["CodeMeaning"], category["CodingSchemeDesignator"]),
            type=SnomedCode(term["CodeValue"], term["CodeMeaning"], term["CodingSchemeDesignator"]),
        ))
    return ClassTable(classes)


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    make_shareable(tmp)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="trained LMSF-A checkpoint")
    parser.add_argument("--name", default="lmsfa-n-vocalfolds", help="file stem of the bundled model")
    parser.add_argument("--provenance", type=Path, default=None, help="JSON file merged into the provenance")
    parser.add_argument("--default", action="store_true", help="make this the default model")
    args = parser.parse_args()

    model, meta = load_checkpoint(args.checkpoint)
    table = terminology_classes(meta.class_table.names)
    provenance = dict(meta.provenance)
    if args.provenance:
        provenance.update(json.loads(args.provenance.read_text(encoding="utf-8")))
    MODELS.mkdir(parents=True, exist_ok=True)
    pt_path = MODELS / f"{args.name}.pt"
    onnx_path = MODELS / f"{args.name}.onnx"
    pt_sha = save_checkpoint(pt_path, model, table, meta.input_size, provenance)
    export_onnx(model, onnx_path, meta.input_size, dynamic=True, class_table=table,
                metadata={"checkpoint_sha256": pt_sha})
    onnx_sha = sha256_file(onnx_path)

    index_path = MODELS / "models.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {"models": {}}
    index["models"][args.name] = {
        "file": pt_path.name,
        "sha256": pt_sha,
        "onnx_file": onnx_path.name,
        "onnx_sha256": onnx_sha,
        "classes": table.names,
        "input_size": list(meta.input_size),
        "card": "MODEL_CARD.md",
    }
    if args.default or "default" not in index:
        index["default"] = args.name
    write_json_atomic(index_path, index)
    print(f"{pt_path} SHA-256 {pt_sha}\n{onnx_path} SHA-256 {onnx_sha}")


if __name__ == "__main__":
    main()
