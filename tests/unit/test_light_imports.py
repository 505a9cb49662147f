"""The unit and in-process layers import neither MLflow nor Redis: importing them costs seconds and
would hide a gateway module that started to need either."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_unit_and_in_process_modules_import_neither_mlflow_nor_redis() -> None:
    modules = ["tests.conftest", "tests.inprocess.conftest", "hokusai_registry.gateway.assembly"] + [
        f"tests.{path.parent.name}.{path.stem}"
        for folder in ("unit", "inprocess", "support")
        for path in sorted((TESTS / folder).glob("*.py"))
        if path.stem != "__init__"
    ]
    program = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'redis'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=TESTS.parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
