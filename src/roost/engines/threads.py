"""How roost's processes use math threads: set in the environment before a framework loads.

OpenMP runtimes (torch's, and the one scikit-learn ships) read their settings once, when the
library loads, so these settings must be in the environment before the first `import torch`: the
`roost` command sets them as it starts, and the process engine in each worker's environment
before the worker's interpreter starts. A value the user set is never replaced.

- `OMP_WAIT_POLICY=PASSIVE`: an idle OpenMP thread sleeps instead of spinning. On a machine whose
  cores are busy (other processes, or other roost workers), spinning threads took the cores the
  working threads needed: torch and Keras runs took 2-4x as long.
- Thread counts per worker: `cores // workers`, so workers × threads stays within the cores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"
"""The variable that says how idle OpenMP threads wait."""

PASSIVE = "PASSIVE"

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
"""The variables that size a process's math thread pools (OpenMP, MKL, OpenBLAS, TensorFlow)."""

_set_here: set[int] = set()  # ids of the environments whose wait policy roost itself set


def use_passive_wait(environ: MutableMapping[str, str] | None = None) -> str:
    """Set `OMP_WAIT_POLICY=PASSIVE` in `environ` (default: this process's) unless it is set;
    return a few words for the run's engine line that say which value holds and whose it is."""
    environ = os.environ if environ is None else environ
    if WAIT_POLICY not in environ:
        environ[WAIT_POLICY] = PASSIVE
        _set_here.add(id(environ))
    value = environ[WAIT_POLICY]
    if id(environ) in _set_here and value == PASSIVE:
        return f"{WAIT_POLICY}={PASSIVE}, roost's default (set it yourself to choose)"
    return f"{WAIT_POLICY}={value}, yours"


def worker_environment(threads: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker process given `threads` math threads: `environ` (default:
    this process's) plus the thread counts and the passive wait policy, where it does not set
    them itself."""
    if threads < 1:
        raise ValueError(f"a worker needs at least one thread, got {threads}")
    env = dict(os.environ if environ is None else environ)
    for variable in THREAD_VARIABLES:
        env.setdefault(variable, str(threads))
    env.setdefault(WAIT_POLICY, PASSIVE)
    return env


__all__ = ["PASSIVE", "THREAD_VARIABLES", "WAIT_POLICY", "use_passive_wait", "worker_environment"]
