"""Static checks of the scripted module file and its Qt Designer .ui file.

Real Slicer (qt, ctk, slicer.ScriptedLoadableModule) is not available in CI, so the module
cannot be imported here. These tests parse it instead: the file compiles, loads without the
heavy packages, and every widget it names exists in the .ui file. The module's self-test
(LMSFASegmentationTest) covers the rest inside Slicer.
"""

from __future__ import annotations

import ast
import py_compile
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_ROOT = REPO_ROOT / "LMSFASegmentation"
MODULE_FILE = MODULE_ROOT / "LMSFASegmentation.py"
UI_FILE = MODULE_ROOT / "Resources" / "UI" / "LMSFASegmentation.ui"

# What the module file may import at load time: Slicer's own Python modules and the standard
# library. torch, numpy, cv2 and the lmsfa core are imported inside functions.
ALLOWED_TOP_LEVEL_IMPORTS = {"slicer", "qt", "ctk", "vtk", "__future__"} | set(sys.stdlib_module_names)

# Widget classes that Qt provides; every other class must be declared as a custom widget.
QT_CLASS_PREFIX = "Q"


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


@pytest.fixture(scope="module")
def ui_root() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


def _ui_widgets(ui_root: ElementTree.Element) -> dict[str, str]:
    """Return {object name: class} of every widget in the .ui file."""
    return {widget.get("name"): widget.get("class") for widget in ui_root.iter("widget")}


def _names_used_as_ui_attributes(tree: ast.Module) -> set[str]:
    """Return X for every ``self.ui.X`` in the module file."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if (
            isinstance(owner, ast.Attribute)
            and owner.attr == "ui"
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "self"
        ):
            names.add(node.attr)
    return names


def test_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "module.pyc"), doraise=True)


def test_top_level_imports_allowed(module_tree):
    imported = []
    for node in module_tree.body:
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports do not work in a Slicer module file"
            imported.append(node.module)
    assert "slicer" in imported
    rejected = sorted({name for name in imported if name.split(".")[0] not in ALLOWED_TOP_LEVEL_IMPORTS})
    assert not rejected, f"import these inside the functions that need them: {rejected}"


def test_no_conditional_top_level_code(module_tree):
    """try/if blocks at module level could import or install packages when Slicer loads the module."""
    kinds = {type(node).__name__ for node in module_tree.body}
    assert not kinds & {"Try", "If", "With", "For", "While"}
    calls = [
        node
        for node in module_tree.body
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant)
    ]
    assert not calls, "the module file runs code at import time"


def test_module_defines_slicer_classes(module_tree):
    classes = {node.name: node for node in module_tree.body if isinstance(node, ast.ClassDef)}
    expected_bases = {
        "LMSFASegmentation": "ScriptedLoadableModule",
        "LMSFASegmentationWidget": "ScriptedLoadableModuleWidget",
        "LMSFASegmentationLogic": "ScriptedLoadableModuleLogic",
        "LMSFASegmentationTest": "ScriptedLoadableModuleTest",
    }
    for name, base in expected_bases.items():
        assert name in classes, f"class {name} is missing"
        bases = [getattr(node, "id", None) for node in classes[name].bases]
        assert base in bases


def test_ui_names_exist_in_ui_file(module_tree, ui_root):
    used = _names_used_as_ui_attributes(module_tree)
    assert {"applyButton", "progressBar", "modelSha256LineEdit"} <= used
    widgets = _ui_widgets(ui_root)
    missing = sorted(used - set(widgets))
    assert not missing, f"the module uses widgets that {UI_FILE.name} does not define: {missing}"


def test_ui_root_widget(ui_root):
    assert ui_root.findtext("class") == "LMSFASegmentation"
    root_widget = ui_root.find("widget")
    assert root_widget.get("class") == "qMRMLWidget"
    assert root_widget.get("name") == "LMSFASegmentation"


def test_ui_widget_names_unique(ui_root):
    names = [widget.get("name") for widget in ui_root.iter("widget")]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates


def test_ui_custom_widgets_declared(ui_root):
    declared = {element.findtext("class") for element in ui_root.iter("customwidget")}
    used = {widget_class for widget_class in _ui_widgets(ui_root).values() if not widget_class.startswith(QT_CLASS_PREFIX)}
    assert used <= declared, f"declare these classes under <customwidgets>: {sorted(used - declared)}"


def test_ui_node_selectors_get_scene(ui_root):
    """Every MRML node selector receives the scene, or it stays empty in Slicer."""
    selectors = {name for name, cls in _ui_widgets(ui_root).items() if cls == "qMRMLNodeComboBox"}
    assert selectors
    connected = {
        connection.findtext("receiver")
        for connection in ui_root.iter("connection")
        if connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert selectors <= connected


def _module_literal(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not defined at the top of {MODULE_FILE.name}")


def test_device_choices_match_combo_box(module_tree, ui_root):
    choices = _module_literal(module_tree, "DEVICE_CHOICES")
    combo = next(widget for widget in ui_root.iter("widget") if widget.get("name") == "deviceComboBox")
    items = [item.findtext("property/string") for item in combo.findall("item")]
    assert items == list(choices)
    assert set(choices.values()) == {"auto", "cpu", "cuda"}


def test_threshold_sliders_in_unit_range(ui_root):
    widgets = {widget.get("name"): widget for widget in ui_root.iter("widget")}
    for name in ("confidenceThresholdSliderWidget", "iouThresholdSliderWidget"):
        properties = {prop.get("name"): prop for prop in widgets[name].findall("property")}
        minimum = float(properties["minimum"].findtext("double"))
        maximum = float(properties["maximum"].findtext("double"))
        value = float(properties["value"].findtext("double"))
        assert 0.0 < minimum <= value <= maximum <= 1.0, name


def _module_string(tree: ast.Module, class_name: str, attribute: str) -> str:
    """Return the string assigned to ``self.parent.<attribute>`` in a class's ``__init__``."""
    module_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    for node in ast.walk(module_class):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Attribute)
            and node.targets[0].attr == attribute
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{class_name} does not set {attribute}")


def test_acknowledgement_attributes_vocalfolds(module_tree):
    """The sample clip comes from the CC BY 4.0 vocalfolds set, which requires attribution."""
    text = " ".join(_module_string(module_tree, "LMSFASegmentation", "acknowledgementText").split())
    assert "Laves" in text
    assert "CC BY 4.0" in text
    assert "https://github.com/imesluh/vocalfolds" in text


def test_module_category_is_segmentation(module_tree):
    assert _module_string(module_tree, "LMSFASegmentation", "categories") == ["Segmentation"]


TRAINING_WIDGETS = {
    "trainingCollapsibleButton": "ctkCollapsibleButton",
    "trainingBrowserSelector": "qMRMLNodeComboBox",
    "trainingEpochsSpinBox": "QSpinBox",
    "trainingImageSizeSpinBox": "QSpinBox",
    "trainingBatchSizeSpinBox": "QSpinBox",
    "trainingOutputPathLineEdit": "ctkPathLineEdit",
    "trainButton": "QPushButton",
    "trainingProgressBar": "QProgressBar",
    "trainingStatusLabel": "QLabel",
}


def _widget_properties(ui_root: ElementTree.Element, name: str) -> dict[str, ElementTree.Element]:
    widget = next(widget for widget in ui_root.iter("widget") if widget.get("name") == name)
    return {prop.get("name"): prop for prop in widget.findall("property")}


def test_training_widgets_in_ui_and_used(module_tree, ui_root):
    widgets = _ui_widgets(ui_root)
    used = _names_used_as_ui_attributes(module_tree)
    for name, widget_class in TRAINING_WIDGETS.items():
        assert widgets.get(name) == widget_class, f"{name} should be a {widget_class} in {UI_FILE.name}"
        assert name in used, f"the module never uses {name}"


def test_training_section_title_and_collapsed(ui_root):
    properties = _widget_properties(ui_root, "trainingCollapsibleButton")
    assert properties["text"].findtext("string") == "Train on corrected frames"
    assert properties["collapsed"].findtext("bool") == "true"


def test_training_browser_selector_type(ui_root):
    properties = _widget_properties(ui_root, "trainingBrowserSelector")
    node_types = [element.text for element in properties["nodeTypes"].iter("string")]
    assert node_types == ["vtkMRMLSequenceBrowserNode"]


def test_training_image_size_multiple_of_32(ui_root):
    properties = _widget_properties(ui_root, "trainingImageSizeSpinBox")
    values = {name: int(properties[name].findtext("number")) for name in ("minimum", "maximum", "singleStep", "value")}
    assert values["minimum"] >= 64  # the trainer rejects smaller inputs
    for name, value in values.items():
        assert value % 32 == 0, f"{name} {value} is not a multiple of 32"
    assert values["minimum"] <= values["value"] <= values["maximum"]


def test_training_spin_boxes_start_at_one(ui_root):
    for name in ("trainingEpochsSpinBox", "trainingBatchSizeSpinBox"):
        properties = _widget_properties(ui_root, name)
        minimum = int(properties["minimum"].findtext("number"))
        value = int(properties["value"].findtext("number"))
        assert minimum == 1, name
        assert value >= minimum, name


def test_training_classes_defined(module_tree):
    classes = {node.name for node in module_tree.body if isinstance(node, ast.ClassDef)}
    assert {"TrainingRequest", "TrainingJob"} <= classes
    logic = next(node for node in module_tree.body if isinstance(node, ast.ClassDef) and node.name == "LMSFASegmentationLogic")
    methods = {node.name for node in logic.body if isinstance(node, ast.FunctionDef)}
    assert {"exportTrainingData", "startTraining"} <= methods


def test_training_data_folder_matches_docstring(module_tree):
    """The COCO export folder in startTraining's docstring matches TRAINING_DATA_FOLDER."""
    folder = _module_literal(module_tree, "TRAINING_DATA_FOLDER")
    logic = next(node for node in module_tree.body if isinstance(node, ast.ClassDef) and node.name == "LMSFASegmentationLogic")
    start = next(node for node in logic.body if isinstance(node, ast.FunctionDef) and node.name == "startTraining")
    assert folder in ast.get_docstring(start)
