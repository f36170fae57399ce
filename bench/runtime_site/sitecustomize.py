"""Run by every Python process the benchmark starts (`bench.processes.spawn` puts this folder
first on their PYTHONPATH): they run with the modules the image has, not the development
virtualenv's extras.

`rich` is installed here only for import-linter (requirements/dev.lock); structlog imports it
when it finds it (`structlog.dev`, `structlog.tracebacks`), which in the development virtualenv
costs each process about 5 MiB of RSS and a third of a second or more of start-up that the image
(requirements/runtime.lock: no rich) never pays. Marking it absent makes `import rich` raise
ImportError, which structlog expects. `PLANELINK_BENCH_DEV_MODULES=1` leaves them importable.
"""

import os
import sys

DEV_ONLY_MODULES = ("rich",)

if os.environ.get("PLANELINK_BENCH_DEV_MODULES", "") != "1":
    for _name in DEV_ONLY_MODULES:
        sys.modules.setdefault(_name, None)  # type: ignore[arg-type]
