import importlib.util
import sys

from .conftest import REPO


def load_recipe(name: str):
    """Import `recipes/<name>.py` as a module (recipes are scripts, not a package)."""
    module_name = f"recipe_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
