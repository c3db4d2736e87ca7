"""The layout holds the design: the core imports no adapter, no web framework, no hardware library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

CORE = ["appliance.config", "appliance.errors", "appliance.clock", "appliance.passwords",
        *sorted(f"appliance.{p.parent.name}.{p.stem}" for folder in ("pipeline", "storage")
                for p in (REPO / "appliance" / folder).glob("*.py") if p.stem != "__init__")]
FORBIDDEN_LIBRARIES = {"flask", "werkzeug", "waitress", "gpiozero", "picamera2", "libcamera", "ai_edge_litert",
                       "tflite_runtime"}
ADAPTERS = {"appliance.cameras", "appliance.inference", "appliance.panel", "appliance.web", "appliance.service",
            "appliance.cli", "appliance.transfer", "appliance.system", "appliance.bench"}


def imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(result.stdout.split())


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_web_framework_hardware_library_runtime_or_adapter(module):
    modules = imported_by(module)
    assert not {m.split(".")[0] for m in modules} & FORBIDDEN_LIBRARIES
    assert not {".".join(m.split(".")[:2]) for m in modules} & ADAPTERS


def test_the_system_settings_run_at_boot_without_the_page():
    modules = imported_by("appliance.system.settings")
    assert not {m.split(".")[0] for m in modules} & {"flask", "werkzeug", "waitress"}
    assert "appliance.web" not in modules


def test_every_folder_of_the_package_says_what_lives_there():
    for init in (REPO / "appliance").glob("*/__init__.py"):
        text = init.read_text()
        assert text.startswith('"""') and len(text.split('"""')[1].strip()) > 40, init


def test_no_module_of_the_package_passes_400_lines():
    long = {str(p.relative_to(REPO)): n for p in Path(REPO / "appliance").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these along a seam they have: {long}"


def test_every_public_error_class_lives_in_errors_py():
    import ast

    elsewhere = []
    for path in (REPO / "appliance").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if bases & {"Exception", "ApplianceError", "ValueError", "RuntimeError", "OSError"} or \
                        node.name.endswith("Error"):
                    elsewhere.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not elsewhere, f"move these to appliance/errors.py (one family): {elsewhere}"
