"""The package's folders are its rooms, and each imports only from the rooms it stands on.

Rooms (each folder's `__init__` docstring says the same): `core` (what every trainer shares) at the bottom; one folder
per training method on it, beside each other and never importing each other (`soup`, `m2po`, `luffy`: METHODS);
`rewards` on core; `toy` (the offline tasks and built-in models) on rewards; `evaluation` on all of those but the
baselines; `scripts` (the commands) and `testing` (what tests and benchmarks share) on top. The package's `__init__`
(the facade) and a module kept at an old location for one release (`soup_trl/truncation.py`) form the `facade` room.
No import loop between modules, not even a type-only one.
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "soup_trl"
METHODS = ["soup", "m2po", "luffy"]
ROOMS = ["core", *METHODS, "rewards", "toy", "evaluation", "scripts", "testing", "facade"]
ALLOWED = {  # room -> the rooms it may import from (itself included)
    "core": {"core"},
    **{method: {"core", method} for method in METHODS},
    "rewards": {"core", "rewards"},
    "toy": {"core", "rewards", "toy"},
    "evaluation": {"core", "soup", "rewards", "toy", "evaluation"},
    "scripts": set(ROOMS),
    "testing": set(ROOMS) - {"scripts"},
    "facade": {"soup"},
    "recipes": set(),
    "accelerate_configs": set(),
}
DEPRECATED_MODULES = {"soup_trl.truncation"}  # old locations kept for one release


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    is_module = len(parts) >= 2 and (PACKAGE / f"{parts[1]}.py").is_file()
    is_facade_name = len(parts) == 2 and not is_module  # `from soup_trl import name`: a name of the facade
    assert module == "soup_trl" or is_facade_name or module in DEPRECATED_MODULES, (
        f"{module} sits outside every room: give it a folder"
    )
    return "facade"


def imported_modules(path: Path, module: str, type_checking: bool = True) -> list[str]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                found += [name] if node.module else [f"{name}.{alias.name}" for alias in node.names]
            elif node.module:
                found.append(node.module)
    return [name for name in found if name == "soup_trl" or name.startswith("soup_trl.")]


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


MODULES = dict(modules())


@pytest.mark.parametrize(("module", "path"), [m for m in MODULES.items() if m[0] != "soup_trl"], ids=lambda x: str(x))
def test_no_import_from_a_room_it_does_not_stand_on(module, path):
    room = room_of(module)
    for target in imported_modules(path, module):
        if room_of(target) == "facade" and target not in DEPRECATED_MODULES:
            # the facade re-exports names of several rooms: only the commands and the test support (users' view) may use it
            assert room in ("scripts", "testing"), f"{module} imports the package facade; import the module instead"
            continue
        assert room_of(target) in ALLOWED[room], f"{module} ({room}) imports {target} ({room_of(target)})"


def test_no_import_loop():
    graph = {}
    for module, path in MODULES.items():
        if module == "soup_trl":
            continue
        targets = set()
        for target in imported_modules(path, module):
            while target not in MODULES and "." in target:  # `from .x import name` names a module or a name in it
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module and target != "soup_trl":
                targets.add(target)
        graph[module] = targets
    package_of = {m: m if MODULES[m].name == "__init__.py" else m.rsplit(".", 1)[0] for m in graph}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt == package_of.get(node):  # a module importing its own package's __init__ runs it first anyway
                continue
            if state.get(nxt) == "open":
                raise AssertionError("import loop: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("room", sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()))
def test_every_folder_says_what_it_is_for_and_what_it_may_import(room):
    doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text())) or ""
    assert len(doc) > 40, f"soup_trl/{room}/__init__.py needs a docstring: what the folder is for"
    assert "May import" in doc, f"soup_trl/{room}/__init__.py must say what the folder may import"


def test_room_of_reads_folders():
    assert room_of("soup_trl.soup.trainer") == "soup"
    assert room_of("soup_trl.m2po.trainer") == "m2po"
    assert room_of("soup_trl.core.trainer") == "core"
    assert room_of("soup_trl.rewards.grading") == "rewards"
    assert room_of("soup_trl.evaluation") == "evaluation"
    assert room_of("soup_trl") == "facade"
    assert room_of("soup_trl.evaluation.runner") == "evaluation"
    assert room_of("soup_trl.__version__") == room_of("soup_trl.truncation") == "facade"


def test_a_module_outside_every_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "loose_module.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    with pytest.raises(AssertionError, match="outside every room"):
        room_of("soup_trl.loose_module")


def test_every_module_of_the_package_is_in_a_room():
    for module in MODULES:
        assert room_of(module) in ALLOWED


def test_every_method_folder_has_the_same_shape():
    """A config, a thin trainer, its pure tensor functions and its paper, in each method's folder."""
    for method in METHODS:
        files = {p.name for p in (PACKAGE / method).glob("*.py")}
        assert {"__init__.py", "config.py", "trainer.py", "ops.py", "model_card.py"} <= files, method


def test_the_soup_trainer_is_a_list_of_hooks():
    """SOUP's trainer reads as hooks that call the modules of its folder (the target of the layout: <= 300 lines)."""
    tree = ast.parse((PACKAGE / "soup" / "trainer.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SOUPTrainer")
    assert trainer.end_lineno - trainer.lineno + 1 <= 300


def test_the_checker_sees_relative_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("from ..evaluation.runner import x\nfrom . import ops\nimport soup_trl.scripts.cli\n")
    assert imported_modules(path, "soup_trl.rewards.mod") == [
        "soup_trl.evaluation.runner",
        "soup_trl.rewards.ops",
        "soup_trl.scripts.cli",
    ]


def test_the_loop_check_finds_a_loop(tmp_path, monkeypatch):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .fake_b import x\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .fake_a import y\n")
    monkeypatch.setitem(MODULES, "soup_trl.fake_a", a)
    monkeypatch.setitem(MODULES, "soup_trl.fake_b", b)
    with pytest.raises(AssertionError, match="import loop"):
        test_no_import_loop()


def test_every_trainer_stands_on_the_core_trainer():
    from soup_trl import LUFFYTrainer, M2POTrainer, SOUPTrainer
    from soup_trl.core.config import MethodConfig
    from soup_trl.core.trainer import MethodTrainer

    for trainer in (SOUPTrainer, M2POTrainer, LUFFYTrainer):
        assert issubclass(trainer, MethodTrainer)
        assert issubclass(trainer.config_class, MethodConfig)
        fields = trainer.config_class.__dataclass_fields__
        assert {"console", "compact_generation", "recipe", "dynamic_sampling", "dynamic_sampling_max_rounds"} <= set(fields)
        assert trainer._paper["id"] == trainer.paper.arxiv_id


def test_public_imports():
    from soup_trl import SOUPConfig, SOUPTrainer, TruncationInputs, get_reward_func, register_truncation
    from soup_trl.rewards import accuracy_reward

    assert get_reward_func("accuracy") is accuracy_reward
    assert all(x is not None for x in (SOUPConfig, SOUPTrainer, TruncationInputs, register_truncation))
