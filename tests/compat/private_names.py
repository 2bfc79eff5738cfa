"""A static scan for uses of other libraries' private names in northstar's source.

A private name is one that starts with a single underscore. Flagged, in a module:

* importing one (``from lib import _x``, ``from lib._mod import y``, ``import lib._mod``);
* reading or writing ``obj._x`` on anything but ``self`` / ``cls`` or a northstar import;
  in a class that subclasses another library's class, ``self._x`` / ``super()._x`` for a
  name the class does not define itself, and a method that overrides the base's ``_x``;
* ``getattr`` / ``setattr`` / ``hasattr`` / ``delattr`` with a private name on another object;
* monkeypatching: assigning (or deleting) an attribute of another library's module or class
  (``lib.mod.name = ...``, ``LibClass.ATTR = ...``, ``setattr(lib_module, ...)``), reached
  through a name imported from it. Setting attributes of an instance is not monkeypatching.

Names imported from ``northstar`` or ``actors`` (and relative imports) are the project's own.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

OWN_ROOTS = ("northstar", "actors")
ATTR_FUNCS = ("getattr", "setattr", "hasattr", "delattr")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_own(module: str) -> bool:
    return module.split(".", 1)[0] in OWN_ROOTS


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str
    name: str  # the other library's name that is used

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


@dataclass
class ClassInfo:
    name: str
    foreign_bases: list[str]  # dotted paths of other libraries' base classes
    own_names: set[str] = field(default_factory=set)


def resolve(dotted: str) -> Any:
    """The object a dotted path names (module attribute chain), or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def is_module_or_class(dotted: str) -> bool:
    """Whether a dotted path names a module or a class (an unknown one counts as both):
    setting attributes of an instance a library hands out (``quart.g``) is its API."""
    obj = resolve(dotted)
    return obj is None or issubclass(type(obj), type | ModuleType)


class Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.foreign: dict[str, str] = {}  # local name -> dotted path in another library
        self.own: set[str] = set()  # local names bound to northstar's own imports
        self.classes: list[ClassInfo] = []
        self.findings: list[Finding] = []

    def flag(self, node: ast.AST, what: str, name: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), what, name.rsplit(".", 1)[-1]))

    # -- imports -----------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if is_own(alias.name):
                self.own.add(alias.asname or alias.name.split(".")[0])
                continue
            if any(is_private(part) for part in alias.name.split(".")):
                self.flag(node, f"imports the private module {alias.name}", alias.name)
            if alias.asname:
                self.foreign[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.foreign[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or is_own(module) or module == "__future__":
            for alias in node.names:
                self.own.add(alias.asname or alias.name)
            return
        if any(is_private(part) for part in module.split(".")):
            self.flag(node, f"imports from the private module {module}", module)
        for alias in node.names:
            if is_private(alias.name):
                self.flag(node, f"imports the private name {module}.{alias.name}", alias.name)
            self.foreign[alias.asname or alias.name] = f"{module}.{alias.name}"

    # -- classes -----------------------------------------------------------------------
    def dotted(self, node: ast.expr) -> str | None:
        """``a.b.c`` for an expression rooted at an imported name of another library."""
        if isinstance(node, ast.Subscript):
            return self.dotted(node.value)
        if isinstance(node, ast.Name):
            return self.foreign.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = [d for d in (self.dotted(b) for b in node.bases) if d is not None]
        info = ClassInfo(node.name, bases, own_names(node))
        self.classes.append(info)
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and is_private(stmt.name):
                for base in bases:
                    if hasattr(resolve(base), stmt.name):
                        self.flag(stmt, f"{node.name} overrides the private {base}.{stmt.name}", stmt.name)
        self.generic_visit(node)
        self.classes.pop()

    def current(self) -> ClassInfo | None:
        return self.classes[-1] if self.classes else None

    # -- attributes --------------------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if is_private(node.attr):
            self.check_private_attribute(node, node.value, node.attr)
        self.generic_visit(node)

    def check_private_attribute(self, node: ast.AST, value: ast.expr, attr: str) -> None:
        cls = self.current()
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            if cls is not None and cls.foreign_bases and attr not in cls.own_names:
                self.flag(node, f"{cls.name} uses the private {cls.foreign_bases[0]}.{attr}", attr)
            return
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
            if cls is not None and cls.foreign_bases:
                self.flag(node, f"{cls.name} calls the private {cls.foreign_bases[0]}.{attr}", attr)
            return
        if isinstance(value, ast.Name) and value.id in self.own:
            return
        self.flag(node, f"uses the private name .{attr} of another object", attr)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ATTR_FUNCS and len(node.args) >= 2:
            target, name = node.args[0], node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and is_private(name.value):
                self.check_private_attribute(node, target, name.value)
            owner = self.dotted(target)
            if func.id in ("setattr", "delattr") and owner is not None and is_module_or_class(owner):
                self.flag(node, f"monkeypatches {owner} with {func.id}", owner)
        self.generic_visit(node)

    # -- monkeypatching ----------------------------------------------------------------
    def check_target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Attribute):
            owner = self.dotted(target.value)
            if owner is not None and is_module_or_class(owner):
                self.flag(target, f"monkeypatches {owner}.{target.attr}", target.attr)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self.check_target(element)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.check_target(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.check_target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.check_target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self.check_target(target)
        self.generic_visit(node)


def own_names(node: ast.ClassDef) -> set[str]:
    """Names a class defines itself: methods, class attributes, ``__slots__``, ``self.x = ...``."""
    names: set[str] = set()
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets) and stmt.value is not None:
                names.update(e.value for e in ast.walk(stmt.value)
                             if isinstance(e, ast.Constant) and isinstance(e.value, str))
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = sub.targets
        elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
            targets = [sub.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                names.add(target.attr)
    return names


def scan_source(text: str, path: str = "<source>") -> list[Finding]:
    scanner = Scanner(path)
    scanner.visit(ast.parse(text))
    return scanner.findings


def scan_tree(root: Path, *, skip: tuple[str, ...] = ()) -> Iterator[Finding]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        if any(rel.startswith(prefix) for prefix in skip):
            continue
        yield from scan_source(path.read_text(), rel)
