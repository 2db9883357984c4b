"""Static checks of the Qt layer (no Qt needed): the .ui files and what the module code reads from them.

- every ``self.ui.<name>`` the module file uses exists as an object name in the module's .ui;
- every widget/layout class in the .ui is a known Qt, CTK or qMRML class (explicit allow-list below);
- every ``SlicerParameterName`` in the .ui is a field of the module's ``@parameterNodeWrapper`` class, and every
  node field of the parameter node is bound to a widget (or listed as bound in code).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("ReirradiationDose", "DelineationReview")

KNOWN_WIDGET_CLASSES = {
    # Qt
    "QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QComboBox", "QSpinBox",
    "QDoubleSpinBox", "QLineEdit", "QTextEdit", "QPlainTextEdit", "QGroupBox", "QFrame", "QTabWidget",
    "QTableWidget", "QListWidget", "QProgressBar", "QSlider", "QScrollArea", "QStackedWidget", "QDialogButtonBox",
    # CTK
    "ctkCollapsibleButton", "ctkCollapsibleGroupBox", "ctkSliderWidget", "ctkRangeWidget", "ctkDoubleSpinBox",
    "ctkPathLineEdit", "ctkDirectoryButton", "ctkCheckBox", "ctkComboBox", "ctkMenuButton", "ctkColorPickerButton",
    "ctkCheckableComboBox", "ctkSearchBox",
    # qMRML / qSlicer
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "qMRMLSubjectHierarchyComboBox",
    "qMRMLSubjectHierarchyTreeView", "qMRMLSegmentsTableView", "qMRMLSegmentSelectorWidget", "qMRMLTableView",
    "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qMRMLCollapsibleButton", "qMRMLPlotWidget",
    "qMRMLMarkupsToolBar", "qSlicerWidget",
}
KNOWN_LAYOUT_CLASSES = {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}
# parameter-node fields bound by hand in the widget code (no SlicerParameterName in the .ui)
BOUND_IN_CODE = {"DelineationReview": {"observerSegmentations", "borderMarks"}}


def uiTree(module: str) -> ET.Element:
    return ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()


def objectNames(root: ET.Element) -> set[str]:
    return {e.get("name") for e in root.iter() if e.tag in ("widget", "layout", "spacer") and e.get("name")}


def parameterNames(root: ET.Element) -> dict[str, str]:
    """{widget name: SlicerParameterName}."""
    out = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                # a dynamic property: without stdset="0" the loader looks for a Q_PROPERTY of that name
                assert prop.get("stdset") == "0", f"{widget.get('name')}: SlicerParameterName needs stdset=\"0\""
                out[widget.get("name")] = prop.findtext("string")
    return out


def moduleSource(module: str) -> str:
    return (ROOT / module / f"{module}.py").read_text()


def parameterNodeFields(module: str) -> dict[str, str]:
    """Annotated fields of the class decorated with @parameterNodeWrapper: {name: annotation source}."""
    tree = ast.parse(moduleSource(module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_valid_and_names_are_unique(module):
    root = uiTree(module)
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [e.get("name") for e in root.iter() if e.tag in ("widget", "layout") and e.get("name")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"duplicate object names in {module}.ui: {duplicates}"


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_attribute_used_in_code_exists(module):
    used = set(re.findall(r"self\.ui\.(\w+)", moduleSource(module)))
    assert "applyButton" in used
    missing = sorted(used - objectNames(uiTree(module)))
    assert not missing, f"{module}.py reads self.ui.{missing} which {module}.ui does not define"


@pytest.mark.parametrize("module", MODULES)
def test_every_class_in_the_ui_is_known(module):
    root = uiTree(module)
    widgets = {e.get("class") for e in root.iter("widget")}
    layouts = {e.get("class") for e in root.iter("layout")}
    assert not widgets - KNOWN_WIDGET_CLASSES, f"unknown widget classes: {sorted(widgets - KNOWN_WIDGET_CLASSES)}"
    assert not layouts - KNOWN_LAYOUT_CLASSES, f"unknown layout classes: {sorted(layouts - KNOWN_LAYOUT_CLASSES)}"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {c for c in widgets if not c.startswith("Q")}
    assert custom <= declared, f"custom widgets not declared in <customwidgets>: {sorted(custom - declared)}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_names_match_the_parameter_node(module):
    fields = parameterNodeFields(module)
    bound = parameterNames(uiTree(module))
    unknown = sorted(set(bound.values()) - set(fields))
    assert not unknown, f"SlicerParameterName not in the parameter node: {unknown}"
    values = list(bound.values())
    assert len(values) == len(set(values)), "two widgets bound to the same parameter"
    unbound = sorted(set(fields) - set(bound.values()) - BOUND_IN_CODE.get(module, set()))
    assert not unbound, f"parameter-node fields without a widget: {unbound}"


@pytest.mark.parametrize("module", MODULES)
def test_node_selectors_get_the_scene(module):
    """Every node combo box is connected to the module widget's mrmlSceneChanged signal; a table view is not: given a
    scene without a table view node, qMRMLTableView drops its table at the end of every batch process (a scene load
    or import emptied the border-marks table; an API review of Slicer's qMRMLTableView.cxx)."""
    root = uiTree(module)
    combos = {e.get("name") for e in root.iter("widget") if e.get("class", "").startswith("qMRML")
              and e.get("class") not in ("qMRMLWidget", "qMRMLTableView")}
    tableViews = {e.get("name") for e in root.iter("widget") if e.get("class") == "qMRMLTableView"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert combos and combos <= connected, f"not given the scene: {sorted(combos - connected)}"
    assert not tableViews & connected, f"table views given the scene: {sorted(tableViews & connected)}"


@pytest.mark.parametrize("module", MODULES)
def test_transform_selectors_list_every_kind_of_transform(module):
    """A combo of vtkMRMLTransformNode with showChildNodeTypes false lists no linear, grid or B-spline transform
    (Slicer's qMRMLSortFilterProxyModel keeps only nodes of exactly that class): the prior courses' registrations
    could not be picked (an API review)."""
    root = uiTree(module)
    for widget in root.iter("widget"):
        properties = {p.get("name"): p for p in widget.findall("property")}
        types = [s.text for s in properties["nodeTypes"].iter("string")] if "nodeTypes" in properties else []
        if any(t in ("vtkMRMLTransformNode", "vtkMRMLMarkupsNode", "vtkMRMLVolumeNode") for t in types):
            show = properties.get("showChildNodeTypes")
            assert show is None or show.findtext("bool") == "true", f"{widget.get('name')} hides {types}' subclasses"


@pytest.mark.parametrize("module", MODULES)
def test_annotations_are_bound_before_the_parameter_node_wrapper_reads_them(module):
    """Slicer's parameterNodeWrapper reads the class's annotations with typing.get_type_hints; with ``from __future__
    import annotations`` they are strings resolved through sys.modules, which depends on how Slicer loads the file
    (an API review). Without it every name an annotation evaluated at definition uses must be bound before it."""
    tree = ast.parse(moduleSource(module))
    assert not [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    bound = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        else:
            names = []
        for name in names:  # a class's name is bound after its body
            bound.setdefault(name, node.end_lineno if isinstance(node, ast.ClassDef) else node.lineno)
    evaluated = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            evaluated += [(node.lineno, a.annotation) for a in arguments if a.annotation is not None]
            if node.returns is not None:
                evaluated.append((node.lineno, node.returns))
        elif isinstance(node, ast.ClassDef):
            evaluated += [(item.lineno, item.annotation) for item in node.body if isinstance(item, ast.AnnAssign)]
    unbound = [(line, n.id) for line, annotation in evaluated for n in ast.walk(annotation)
               if isinstance(n, ast.Name) and n.id not in dir(builtins) and bound.get(n.id, 10 ** 9) > line]
    assert len(evaluated) > 10 and not unbound, unbound


@pytest.mark.parametrize("module", MODULES)
def test_choice_combo_boxes_offer_every_choice(module):
    """A str parameter with Choice([...]) bound to a QComboBox: the .ui lists exactly those items."""
    source = moduleSource(module)
    fields = parameterNodeFields(module)
    constants = {name: ast.literal_eval(value) for name, value in
                 re.findall(r"^([A-Z_]+) = (\[[^\]]*\])", source, re.M)}
    root = uiTree(module)
    boxes = {e.get("name"): e for e in root.iter("widget") if e.get("class") == "QComboBox"}
    bound = parameterNames(root)
    checked = 0
    for widgetName, parameter in bound.items():
        match = re.search(r"Choice\((\w+)\)", fields[parameter])
        if widgetName in boxes and match:
            items = [i.findtext("property/string") for i in boxes[widgetName].findall("item")]
            assert items == constants[match.group(1)], f"{widgetName} items {items}"
            checked += 1
    assert checked >= 1


def test_delineation_review_choice_lists_are_the_cores():
    """The module's Choice lists are literals (read above without importing Slicer); they must be the core's."""
    from DelineationReviewLib.core.metrics import HD_CONVENTIONS, MSD_CONVENTIONS
    from DelineationReviewLib.core.surface import SURFACE_CONVENTIONS

    constants = {name: ast.literal_eval(value) for name, value in
                 re.findall(r"^([A-Z_]+) = (\[[^\]]*\])", moduleSource("DelineationReview"), re.M)}
    assert constants["HAUSDORFF_CONVENTIONS"] == list(HD_CONVENTIONS)
    assert constants["MSD_CONVENTIONS"] == list(MSD_CONVENTIONS)
    assert constants["SURFACE_CONVENTIONS"] == list(SURFACE_CONVENTIONS)


@pytest.mark.parametrize("module", MODULES)
def test_module_file_follows_the_template(module):
    source = moduleSource(module)
    for needed in (f"class {module}(ScriptedLoadableModule)", f"class {module}Widget(", f"class {module}Logic(",
                   f"class {module}Test(ScriptedLoadableModuleTest)", f'loadUI(self.resourcePath("UI/{module}.ui"))',
                   "tryWithErrorDisplay", "createProgressDialog", "ProcessingCancelled", "def onReload",
                   "importlib.reload", '"Radiotherapy"'):
        assert needed in source, f"{module}.py lacks {needed!r}"
    # Logic never touches the GUI
    logic = source.split(f"class {module}Logic(")[1].split(f"class {module}Test(")[0]
    assert "self.ui" not in logic and "qt." not in logic and "slicer.util.errorDisplay" not in logic


def _defaultValue(module: str, expression: ast.expr):
    """A parameter-node default: a literal, or a name the module file imports from a Lib (resolved by importing it)."""
    if not isinstance(expression, ast.Name):
        return ast.literal_eval(expression)
    for node in ast.parse(moduleSource(module)).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == expression.id:
                    return getattr(importlib.import_module(node.module), alias.name)
    raise AssertionError(f"{module}.py: default {expression.id} is neither a literal nor imported from a Lib")


@pytest.mark.parametrize("module", MODULES)
def test_spin_boxes_show_the_parameter_nodes_range_and_default(module):
    """A spin box bound to a parameter with WithinRange(lo, hi): the .ui's minimum/maximum are lo/hi and its value is
    the parameter node's default, so that the widget a user first sees and the Logic's default cannot drift apart
    (e.g. the border-mark tolerance, a Lib constant shared with the iov and study commands)."""
    tree = ast.parse(moduleSource(module))
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and any(
        isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in n.decorator_list))
    defaults = {stmt.target.id: (ast.unparse(stmt.annotation), stmt.value) for stmt in wrapper.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
    root = uiTree(module)
    bound = parameterNames(root)
    checked = 0
    for widget in root.iter("widget"):
        if widget.get("class") not in ("QSpinBox", "QDoubleSpinBox") or widget.get("name") not in bound:
            continue
        annotation, value = defaults[bound[widget.get("name")]]
        match = re.search(r"WithinRange\(([^,]+),\s*([^)]+)\)", annotation)
        if not match:
            continue
        properties = {p.get("name"): float(p.find("*").text) for p in widget.findall("property")
                      if p.get("name") in ("minimum", "maximum", "value")}
        name = widget.get("name")
        assert properties.get("minimum") == float(match.group(1)), f"{name}: minimum {properties.get('minimum')}"
        assert properties.get("maximum") == float(match.group(2)), f"{name}: maximum {properties.get('maximum')}"
        if value is not None:
            assert properties.get("value") == pytest.approx(float(_defaultValue(module, value))), (
                f"{name}: .ui value {properties.get('value')} is not the parameter node's default")
        checked += 1
    assert checked >= 1


# The widget class -> parameter type pairs Slicer's parameter-node GUI connectors accept (Base/Python/slicer/
# parameterNodeWrapper/guiConnectors.py): a QComboBox binds a str/int/float/bool only with a Choice annotation
# ("ComboBoxToStringableConnector requires the Choice annotation to be used"), raised inside connectGui, which then
# binds no widget at all.
_CONNECTABLE = {"QCheckBox": r"bool", "QSpinBox": r"(Annotated\[)?int\b", "QDoubleSpinBox": r"(Annotated\[)?float\b",
                "QLineEdit": r"str", "QComboBox": r"Annotated\[(str|int|float), Choice\(\w+\)\]",
                "qMRMLNodeComboBox": r"vtkMRML\w+Node"}


@pytest.mark.parametrize("module", MODULES)
def test_every_bound_widget_has_a_connector_for_its_parameter_type(module):
    """The review's finding: constraintSetName (a plain str) was bound to a QComboBox; in Slicer connectGui raised
    during set-up and the whole panel stayed unbound with Apply disabled."""
    root = uiTree(module)
    classes = {w.get("name"): w.get("class") for w in root.iter("widget")}
    fields = parameterNodeFields(module)
    for widgetName, parameter in parameterNames(root).items():
        pattern = _CONNECTABLE.get(classes[widgetName])
        assert pattern is not None, f"{widgetName}: no connector known for {classes[widgetName]}"
        assert re.fullmatch(pattern + r".*", fields[parameter]), \
            f"{widgetName} ({classes[widgetName]}) cannot bind {parameter}: {fields[parameter]}"


def test_the_constraint_set_choices_are_the_shipped_sets():
    from ReirradiationDoseLib.core.constraints import SHIPPED_CONSTRAINT_SETS

    constants = {name: ast.literal_eval(value) for name, value in
                 re.findall(r"^([A-Z_]+) = (\[[^\]]*\])", moduleSource("ReirradiationDose"), re.M)}
    assert constants["CONSTRAINT_SETS"] == list(SHIPPED_CONSTRAINT_SETS)


@pytest.mark.parametrize("module", MODULES)
def test_progress_dialogs_are_modal_and_deleted(module):
    """A static review: the progress callbacks process Qt events, and a non-modal dialog let the user start a second
    run, switch modules or close the scene while a run used its nodes; each run's dialog was also left behind."""
    source = (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "createProgressDialog"]
    assert calls
    for call in calls:
        modality = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("windowModality")
        assert modality == "qt.Qt.ApplicationModal", ast.unparse(call)
    assert source.count("dialog.deleteLater()") == source.count("dialog.close()")
    assert re.search(r"^import qt$", source, re.M)
