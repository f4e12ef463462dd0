"""`make bench` runs every benchmark with arguments it knows, and no benchmark writes over a
tracked report by default (issue 13: bench_generalisation had no spec and rewrote
reports/generalisation.json)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_script_has_a_spec() -> None:
    scripts = {p.stem for p in BENCH.glob("bench_*.py")}
    assert scripts == set(_run_all().specs())


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("bench_*.py")))
def test_outputs_go_under_bench_out(name: str) -> None:
    run_all = _run_all()
    spec = run_all.specs()[name]
    for args in (spec.quick, spec.full):
        paths = [a for a in args if "/" in a]
        assert all(Path(a).resolve().is_relative_to(BENCH / "out") for a in paths), args
    text = (BENCH / f"{name}.py").read_text()
    # a default output path (argparse default=...) never points into reports/
    assert not re.search(r"default\s*=\s*[^,)]*reports/", text)
    assert not re.search(r'REPO\s*/\s*"reports"', text)


def test_generalisation_help_names_its_output() -> None:
    res = subprocess.run([sys.executable, str(BENCH / "bench_generalisation.py"), "--help"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and "--out" in res.stdout
