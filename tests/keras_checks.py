"""Run test files' Keras checks in a fresh process: Keras picks its backend when first imported.

Each named test module has a `_worker()` that runs its checks and returns a JSON-able dict; the
tests assert on those numbers. Several modules may share one process, and so one Keras start-up
(about 10 s on torch, more on TensorFlow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_keras_checks(
    modules: Sequence[str], backend: str, *, timeout: float, **environment: str
) -> dict[str, dict]:
    """Each module's `_worker()` result, run in order in one process with KERAS_BACKEND=backend."""
    env = {
        **os.environ,
        **environment,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        # One thread per framework: tiny models on a shared machine are faster without contention.
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
    }
    code = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        f"for name in {list(modules)!r}:\n"
        "    result = importlib.import_module(name)._worker()\n"
        "    print('RESULT', name, json.dumps(result), flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, payload = line.split(" ", 2)
            results[name] = json.loads(payload)
    assert done.returncode == 0 and set(results) == set(modules), done.stderr[-4000:]
    return results
