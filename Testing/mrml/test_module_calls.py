"""The module files (widget, Logic, self-test) cannot run here (no Qt, no Slicer application), so what they call is
checked against what exists: every call of a Logic method names a method of the Logic class with arguments it
accepts, and every call of a ``ReirradiationDoseLib`` / ``DelineationReviewLib`` function (imported by name, or a
module taken with ``importlib.import_module``) matches that function's real signature on slicer-core. A renamed
parameter in the Lib would otherwise surface only when a user presses the button in Slicer.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e .[test])")

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("ReirradiationDose", "DelineationReview")


def _tree(module: str) -> ast.Module:
    return ast.parse((ROOT / module / f"{module}.py").read_text())


def _logicMethods(tree: ast.Module, module: str) -> dict[str, inspect.Signature]:
    """The Logic class's methods as signatures (``self`` dropped for instance methods)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{module}Logic":
            methods = {}
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in item.decorator_list)
                namespace: dict = {}
                # only whether a parameter has a default matters for binding: defaults naming module constants
                # (e.g. the Lib's tolerance defaults) are replaced by None, they are not defined here
                args = copy.deepcopy(item.args)
                args.defaults = [ast.Constant(None) for _ in args.defaults]
                args.kw_defaults = [None if d is None else ast.Constant(None) for d in args.kw_defaults]
                source = f"def f({ast.unparse(args)}): pass"
                exec(compile(source, "<signature>", "exec"), {"__builtins__": {}, "None": None}, namespace)  # noqa: S102
                signature = inspect.signature(namespace["f"])
                parameters = list(signature.parameters.values())
                if not static and parameters:
                    parameters = parameters[1:]  # self (or cls)
                methods[item.name] = signature.replace(parameters=parameters)
            return methods
    raise AssertionError(f"{module}.py has no {module}Logic class")


def _libraryNames(tree: ast.Module, package: str) -> dict[str, object]:
    """Local name -> the Lib object it stands for: ``from <package>... import f`` anywhere in the file, and
    ``name = importlib.import_module("<package>...")``."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            imported = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(imported, alias.name, None)
                if value is None:  # a submodule: ``from package.core import constraints``
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = value
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
              and ast.unparse(node.value.func) == "importlib.import_module" and node.value.args
              and isinstance(node.value.args[0], ast.Constant)
              and str(node.value.args[0].value).startswith(package)):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = importlib.import_module(node.value.args[0].value)
    return names


def _checkCall(call: ast.Call, signature: inspect.Signature, what: str, problems: list) -> None:
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return  # *args / **kwargs at the call: not checkable statically
    try:
        signature.bind(*([None] * len(call.args)), **{k.arg: None for k in call.keywords})
    except TypeError as error:
        problems.append(f"line {call.lineno}: {what}{signature}: {error}")


def _calls(tree: ast.Module, module: str) -> tuple[list, list]:
    """(calls of Logic methods as (call, method name), calls of Lib objects as (call, dotted text))."""
    logicCalls, libraryCalls = [], []
    logicName = f"{module}Logic"
    # names bound to a Logic instance: ``logic = ModuleLogic()`` (the self-tests)
    instances = {"self.logic", logicName, f"{logicName}()"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and ast.unparse(node.value.func) == logicName:
            instances.update(ast.unparse(t) for t in node.targets)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = ast.unparse(func.value)
            if owner in instances or owner.startswith(f"{logicName}("):
                logicCalls.append((node, func.attr))
            else:
                libraryCalls.append((node, ast.unparse(func)))
        elif isinstance(func, ast.Name):
            libraryCalls.append((node, func.id))
    return logicCalls, libraryCalls


@pytest.mark.parametrize("module", MODULES)
def test_logic_calls_name_real_methods_with_accepted_arguments(module):
    tree = _tree(module)
    methods = _logicMethods(tree, module)
    logicCalls, _ = _calls(tree, module)
    assert len(logicCalls) >= 3, "the widget and self-test call the Logic: the parser found too few calls"
    problems: list[str] = []
    for call, name in logicCalls:
        if name not in methods:
            problems.append(f"line {call.lineno}: the Logic has no method '{name}'")
            continue
        _checkCall(call, methods[name], f"{module}Logic.{name}", problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", MODULES)
def test_library_calls_match_the_library_s_signatures(module):
    tree = _tree(module)
    names = _libraryNames(tree, f"{module}Lib")
    assert names, f"{module}.py imports nothing from {module}Lib"
    _, libraryCalls = _calls(tree, module)
    problems: list[str] = []
    checked = 0
    for call, text in libraryCalls:
        head, _, attribute = text.partition(".")
        target = names.get(head)
        if target is None:
            continue
        if attribute:
            if not inspect.ismodule(target) or "." in attribute:
                continue
            if not hasattr(target, attribute):
                problems.append(f"line {call.lineno}: {target.__name__} has no '{attribute}'")
                continue
            target = getattr(target, attribute)
        if not callable(target) or inspect.isclass(target) and issubclass(target, BaseException):
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        _checkCall(call, signature, text, problems)
        checked += 1
    assert checked >= 2, f"only {checked} Lib calls found in {module}.py: the parser missed them"
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_renamed_parameter():
    """The check itself: a call with a keyword the function does not take is reported."""
    tree = ast.parse("from ReirradiationDoseLib.mrml.pipeline import saveDoseOutputs\n"
                     "saveDoseOutputs(result, folder, includeIdentity=True)\n"
                     "saveDoseOutputs(result, folder, withIdentity=True)\n")
    names = _libraryNames(tree, "ReirradiationDoseLib")
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            _checkCall(node, inspect.signature(names["saveDoseOutputs"]), "saveDoseOutputs", problems)
    assert len(problems) == 1 and "line 3" in problems[0] and "withIdentity" in problems[0]
