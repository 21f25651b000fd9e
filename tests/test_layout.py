"""The package's folders are its layers, and no module imports from a layer above its own."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "soup_trl"
# Lowest first. The package's __init__ is the public facade and may name anything (lazily).
LAYERS = ["core", "baselines", "rewards", "toy", "evaluation", "scripts"]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "core"


def imported_modules(path: Path, module: str) -> list[str]:
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


@pytest.mark.parametrize(("module", "path"), [m for m in modules() if m[0] != "soup_trl"], ids=lambda x: str(x))
def test_no_import_from_a_higher_layer(module, path):
    own = LAYERS.index(layer_of(module))
    for target in imported_modules(path, module):
        if target == "soup_trl":  # the facade re-exports core and rewards names: only the top layer may use it
            assert layer_of(module) == "scripts", f"{module} imports the package facade; import the module instead"
            continue
        assert LAYERS.index(layer_of(target)) <= own, f"{module} ({layer_of(module)}) imports {target}"


def test_layer_of_reads_folders():
    assert layer_of("soup_trl.trainer") == "core"
    assert layer_of("soup_trl.rewards.grading") == "rewards"
    assert layer_of("soup_trl.evaluation") == "evaluation"
    assert layer_of("soup_trl") == "core"
    assert layer_of("soup_trl.evaluation.runner") == "evaluation"


def test_the_checker_sees_relative_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("from ..evaluation.runner import x\nfrom . import ops\nimport soup_trl.scripts.cli\n")
    assert imported_modules(path, "soup_trl.rewards.mod") == [
        "soup_trl.evaluation.runner",
        "soup_trl.rewards.ops",
        "soup_trl.scripts.cli",
    ]


def test_public_imports():
    from soup_trl import SOUPConfig, SOUPTrainer, TruncationInputs, get_reward_func, register_truncation
    from soup_trl.rewards import accuracy_reward

    assert get_reward_func("accuracy") is accuracy_reward
    assert all(x is not None for x in (SOUPConfig, SOUPTrainer, TruncationInputs, register_truncation))
