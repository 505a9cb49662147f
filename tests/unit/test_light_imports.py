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


def test_a_doctor_that_created_nothing_reports_without_importing_mlflow() -> None:
    # A doctor run that fails before its first MLflow call used to spend seconds importing MLflow for the
    # version line and the clean-up of nothing.
    program = (
        "import sys\n"
        "from hokusai_registry.doctor.report import versions\n"
        "from hokusai_registry.doctor.steps import Doctor, StepResult\n"
        "print(versions({})['mlflow client'])\n"
        "doctor = Doctor('http://127.0.0.1:9', None)\n"
        "result = StepResult('cleanup', 'Cleanup')\n"
        "doctor.cleanup(result)\n"
        "doctor.workdir.rmdir()\n"
        "print(result.detail)\n"
        "print('mlflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=TESTS.parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1:3] == ["removed nothing (nothing was created)", "False"]
