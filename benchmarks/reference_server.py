"""A reference script (reference_predict.py, reference_train_step.py) running in the reference environment as a
subprocess that serves one timed run per request, so the benchmarks can interleave its runs with rtmkit's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


class ReferenceServer:
    """Starts ``python script *args`` and waits for its JSON "ready" line (RuntimeError if it never comes); that
    line's fields are kept in ``info``. ``request(line)`` sends one line and returns the JSON reply; ``close()``
    ends the process."""

    def __init__(self, python: str, script: str, *args: str):
        path = Path(__file__).with_name(script)
        self.proc = subprocess.Popen([python, str(path), *map(str, args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready.startswith('{"ready"'):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{script} did not start")
        self.info: dict = json.loads(ready)

    def request(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
