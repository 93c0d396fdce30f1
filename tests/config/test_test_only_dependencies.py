"""Libraries that only build test fixtures never reach product code.

torch, diffusers and transformers are in requirements-dev.txt to make real models for the tests; the
product reads model files with its own readers and must run without them (and never imports what a model
file names). The vendored converters under tests/vendor/ are test code too.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("models_catalog", "workers", "config")
TEST_ONLY = ("torch", "diffusers", "transformers", "safetensors", "tests")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")):
            names.add(node.args[0].value)
    return names


def test_product_code_never_imports_a_test_only_library():
    offenders = []
    files = [p for package in PRODUCT for p in (ROOT / package).rglob("*.py")]
    assert len(files) > 50  # the walk found the product
    for path in files:
        for name in imported_modules(path):
            if name.split(".", 1)[0] in TEST_ONLY:
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_the_check_sees_every_import_form(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import torch.nn\nfrom diffusers import UNet2DConditionModel\n"
                      "import importlib\nimportlib.import_module('transformers')\n__import__('safetensors.torch')\n"
                      "from . import sibling\n")
    assert imported_modules(sample) == {"torch.nn", "diffusers", "importlib", "transformers", "safetensors.torch"}
