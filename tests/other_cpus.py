"""Run a script as if on other CPUs (the kernel sets of ../shared/tools/other-cpus) and compare its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Kernel sets an older or smaller CPU would use (../shared/notes/exactness.md).
OTHER_CPUS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
}


def run_digest(script: str, env: dict[str, str]) -> str:
    """The last line ``script`` prints, run in a fresh interpreter with ``env`` added (tests/ importable)."""
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env, "PYTHONPATH": path}, capture_output=True,
                         text=True, check=True, timeout=300, cwd=tests)
    return out.stdout.strip().splitlines()[-1]
