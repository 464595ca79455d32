"""Static checks of the Slicer extension packaging: CMake lists, .s4ext metadata, requirements.

Real Slicer is not available in CI, so these tests check what a Slicer build would need.
Every script and resource that the module imports or loads must be listed in
LMSFASegmentation/CMakeLists.txt, because the installed extension contains only the listed
files. The extension metadata must agree between CMakeLists.txt and LMSFAExtension.s4ext.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import struct
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_ROOT = REPO_ROOT / "LMSFASegmentation"
MODULE_FILE = MODULE_ROOT / "LMSFASegmentation.py"
MODULE_CMAKE = MODULE_ROOT / "CMakeLists.txt"
TOP_CMAKE = REPO_ROOT / "CMakeLists.txt"
S4EXT = REPO_ROOT / "LMSFAExtension.s4ext"
REQUIREMENTS = MODULE_ROOT / "Resources" / "requirements.txt"

# Packages that Slicer or the PyTorch extension provide: installing them from the module's
# requirements.txt would replace Slicer's own copies.
PACKAGES_PROVIDED_BY_SLICER = {"torch", "numpy", "simpleitk", "pydicom", "vtk", "slicer-core"}

# Python modules that exist only inside Slicer: its own, and PyTorchUtils of the PyTorch extension.
MODULES_PROVIDED_BY_SLICER = {"slicer", "qt", "ctk", "vtk", "PyTorchUtils"}

# Files of the core package that Slicer needs: Python sources and package data.
CORE_DATA_SUFFIXES = {".json", ".yaml", ".yml"}


def _cmake_without_comments(path: Path) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())


def _cmake_set_lists(path: Path) -> dict[str, list[str]]:
    """Return the values of every ``set(NAME value...)`` call, with ``${MODULE_NAME}`` expanded."""
    text = _cmake_without_comments(path)
    lists: dict[str, list[str]] = {}
    for match in re.finditer(r"\bset\(\s*(\w+)\s+([^)]*)\)", text, flags=re.IGNORECASE):
        values = [value.strip('"') for value in match.group(2).split()]
        lists[match.group(1)] = values
    module_name = lists.get("MODULE_NAME", [""])[0]
    return {
        name: [value.replace("${MODULE_NAME}", module_name) for value in values] for name, values in lists.items()
    }


def _cmake_variables(path: Path) -> dict[str, str]:
    """Return the ``EXTENSION_*`` variables that a CMakeLists.txt sets to a quoted string."""
    text = _cmake_without_comments(path)
    return {
        match.group(1): match.group(2)
        for match in re.finditer(r'\bset\(\s*(EXTENSION_\w+)\s+"([^"]*)"\s*\)', text)
    }


def _s4ext_fields(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def _module_constants() -> dict[str, object]:
    """Return the module file's top-level constants that are plain literals."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return constants


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


@pytest.fixture(scope="module")
def module_lists() -> dict[str, list[str]]:
    return _cmake_set_lists(MODULE_CMAKE)


@pytest.fixture(scope="module")
def listed_scripts(module_lists) -> set[str]:
    return set(module_lists["MODULE_PYTHON_SCRIPTS"])


@pytest.fixture(scope="module")
def listed_resources(module_lists) -> set[str]:
    return set(module_lists["MODULE_PYTHON_RESOURCES"])


def test_module_cmake_builds_scripted_module(module_lists):
    text = _cmake_without_comments(MODULE_CMAKE)
    assert module_lists["MODULE_NAME"] == ["LMSFASegmentation"]
    assert "slicerMacroBuildScriptedModule(" in text
    assert "SCRIPTS ${MODULE_PYTHON_SCRIPTS}" in text
    assert "RESOURCES ${MODULE_PYTHON_RESOURCES}" in text


def test_module_file_listed_as_script(listed_scripts):
    assert "LMSFASegmentation.py" in listed_scripts


def test_every_core_script_listed(listed_scripts):
    scripts = [path.relative_to(MODULE_ROOT).as_posix() for path in _files_under(MODULE_ROOT / "lmsfa")]
    scripts = [script for script in scripts if script.endswith(".py")]
    assert "lmsfa/__init__.py" in scripts
    missing = [script for script in scripts if script not in listed_scripts]
    assert not missing, f"add these files to MODULE_PYTHON_SCRIPTS in {MODULE_CMAKE}: {missing}"


def test_core_package_data_listed(listed_resources):
    data_files = [
        path.relative_to(MODULE_ROOT).as_posix()
        for path in _files_under(MODULE_ROOT / "lmsfa")
        if path.suffix in CORE_DATA_SUFFIXES
    ]
    missing = [name for name in data_files if name not in listed_resources]
    assert not missing, f"add these files to MODULE_PYTHON_RESOURCES in {MODULE_CMAKE}: {missing}"


def test_every_module_resource_listed(listed_resources):
    resources = [path.relative_to(MODULE_ROOT).as_posix() for path in _files_under(MODULE_ROOT / "Resources")]
    assert "Resources/UI/LMSFASegmentation.ui" in resources
    missing = [name for name in resources if name not in listed_resources]
    assert not missing, f"add these files to MODULE_PYTHON_RESOURCES in {MODULE_CMAKE}: {missing}"


def test_listed_files_exist(listed_scripts, listed_resources):
    absent = sorted(name for name in listed_scripts | listed_resources if not (MODULE_ROOT / name).is_file())
    assert not absent, f"{MODULE_CMAKE} lists files that do not exist: {absent}"


def test_resource_paths_in_module_listed(listed_resources):
    """Every constant path passed to resourcePath() or moduleResourcePath() is a listed resource."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    loaded = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
        argument = node.args[0]
        if name in ("resourcePath", "moduleResourcePath") and isinstance(argument, ast.Constant):
            loaded.add(f"Resources/{argument.value}")
    assert "Resources/UI/LMSFASegmentation.ui" in loaded
    assert "Resources/requirements.txt" in loaded
    missing = sorted(loaded - listed_resources)
    assert not missing, f"the module loads these files but {MODULE_CMAKE} does not list them: {missing}"


def test_terminology_file_listed(listed_resources):
    from lmsfa.scene.context import TERMINOLOGY_FILE

    relative = TERMINOLOGY_FILE.relative_to(MODULE_ROOT).as_posix()
    assert relative in listed_resources
    assert TERMINOLOGY_FILE.is_file()


def test_extension_resource_folders_installed(module_lists):
    constants = _module_constants()
    installed = set(module_lists["EXTENSION_RESOURCE_FOLDERS"])
    assert constants["BUNDLED_MODEL_FOLDER"] in installed
    assert constants["SAMPLE_FOLDER"] in installed
    text = _cmake_without_comments(MODULE_CMAKE)
    assert "../Resources/${folder}/*" in text
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/${folder}" in text


def test_top_level_cmake_adds_module():
    text = _cmake_without_comments(TOP_CMAKE)
    assert re.search(r"\bproject\(\s*LMSFAExtension\s*\)", text)
    assert re.search(r"\badd_subdirectory\(\s*LMSFASegmentation\s*\)", text)
    assert "find_package(Slicer REQUIRED)" in text
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text
    assert "include(${Slicer_EXTENSION_CPACK})" in text


def test_top_level_metadata_complete():
    variables = _cmake_variables(TOP_CMAKE)
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert variables.get(key), f"{key} is missing or empty in {TOP_CMAKE}"
    assert variables["EXTENSION_CATEGORY"] == "Segmentation"
    assert variables["EXTENSION_DEPENDS"] == "PyTorch"
    assert variables["EXTENSION_HOMEPAGE"].startswith("https://")


@pytest.mark.parametrize(
    ("s4ext_key", "cmake_variable"),
    [
        ("homepage", "EXTENSION_HOMEPAGE"),
        ("category", "EXTENSION_CATEGORY"),
        ("contributors", "EXTENSION_CONTRIBUTORS"),
        ("description", "EXTENSION_DESCRIPTION"),
        ("iconurl", "EXTENSION_ICONURL"),
        ("screenshoturls", "EXTENSION_SCREENSHOTURLS"),
        ("depends", "EXTENSION_DEPENDS"),
    ],
)
def test_s4ext_matches_cmake(s4ext_key, cmake_variable):
    fields = _s4ext_fields(S4EXT)
    variables = _cmake_variables(TOP_CMAKE)
    assert fields.get(s4ext_key) == variables[cmake_variable]


def test_s4ext_source_fields():
    fields = _s4ext_fields(S4EXT)
    assert fields["scm"] == "git"
    assert fields["scmurl"] == _cmake_variables(TOP_CMAKE)["EXTENSION_HOMEPAGE"] + ".git"
    assert fields["build_subdirectory"] == "."
    assert fields["enabled"] == "1"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_extension_icon_in_repository():
    """The icon URL points into this repository, at a 128x128 PNG that exists."""
    url = _cmake_variables(TOP_CMAKE)["EXTENSION_ICONURL"]
    relative = url.split("/main/", 1)[1]
    assert _png_size(REPO_ROOT / relative) == (128, 128)


def test_module_icon_is_png():
    width, height = _png_size(MODULE_ROOT / "Resources" / "Icons" / "LMSFASegmentation.png")
    assert width == height
    assert width >= 64


def _requirements() -> list[Requirement]:
    lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in (line.split("#", 1)[0].strip() for line in lines) if line]


def test_requirements_skip_slicer_packages():
    names = {canonicalize_name(requirement.name) for requirement in _requirements()}
    assert names
    assert not names & PACKAGES_PROVIDED_BY_SLICER


def test_requirements_in_pyproject():
    """Every package that the module installs in Slicer is a dependency of the core package too."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dependencies = {canonicalize_name(Requirement(line).name) for line in pyproject["project"]["dependencies"]}
    extra = [r.name for r in _requirements() if canonicalize_name(r.name) not in dependencies]
    assert not extra, f"requirements.txt lists packages that pyproject.toml does not: {extra}"


def _imported_roots(path: Path, module_name: str) -> tuple[set[str], set[str]]:
    """Return (lmsfa modules, other top-level packages) that a file imports anywhere in its code.

    Imports inside functions count too, because the module reaches them at run time.
    """
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    core, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names = [f"{base}.{node.module}" if node.module else base]
                # "from . import x" may name submodules.
                names += [f"{names[0]}.{alias.name}" for alias in node.names]
            else:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "lmsfa":
                core.add(name)
            else:
                external.add(name.split(".")[0])
    return core, external


def _core_module_file(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (MODULE_ROOT / relative / "__init__.py", MODULE_ROOT / relative.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _packages_the_module_imports() -> set[str]:
    """Return the top-level packages outside lmsfa that the module file reaches through the core."""
    pending = ["LMSFASegmentation"]
    seen: set[str] = set()
    external: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = MODULE_FILE if name == "LMSFASegmentation" else _core_module_file(name)
        if path is None:
            continue  # an attribute imported from a module, not a module itself
        core, other = _imported_roots(path, name)
        external |= other
        for module in core:
            parts = module.split(".")
            pending += [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
    return {name for name in external if name not in sys.stdlib_module_names and name != "__future__"}


def test_requirements_cover_core_imports():
    """Every package that the module reaches through the core is in Slicer or in requirements.txt."""
    packages = _packages_the_module_imports()
    assert {"slicer", "numpy", "cv2"} <= packages
    distributions = importlib.metadata.packages_distributions()
    required = {canonicalize_name(requirement.name) for requirement in _requirements()}
    provided = PACKAGES_PROVIDED_BY_SLICER | required
    uncovered = []
    for package in sorted(packages - MODULES_PROVIDED_BY_SLICER):
        names = {canonicalize_name(name) for name in distributions.get(package, [package])}
        if not names & provided:
            uncovered.append(f"{package} ({', '.join(sorted(names))})")
    assert not uncovered, f"add these to {REQUIREMENTS.name}, or import them only where Slicer does not go: {uncovered}"


def _dependency_closure(name: str) -> set[str]:
    """Return the canonical names of every installed distribution that ``name`` pulls in."""
    seen: set[str] = set()
    pending = [canonicalize_name(name)]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            lines = importlib.metadata.requires(current) or []
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{current} is not installed here, so its dependencies cannot be checked") from None
        for line in lines:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            pending.append(canonicalize_name(requirement.name))
    return seen


@pytest.mark.parametrize("requirement", _requirements(), ids=str)
def test_requirement_does_not_pull_torch(requirement):
    """No requirement depends on torch, so installing them leaves the PyTorch extension's torch alone.

    The dependencies are read from the versions installed in this environment.
    """
    closure = _dependency_closure(requirement.name)
    assert "torch" not in closure
