"""rtmkit.allocator: after keep_freed_memory(), large tensors reuse freed pages instead of page-faulting."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, torch
from rtmkit.allocator import keep_freed_memory

def faults():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # allocate, touch and free 8 MiB, like an activation of every forward pass
        x = torch.empty(2 * 1024 * 1024)
        x.fill_(1.0)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

before = faults()
assert keep_freed_memory()
faults()  # the first round grows the heap once
after = faults()
print(before, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_stops_page_faults_on_reuse():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    # by default glibc returns the freed 8 MiB to the system (mmap, or a trimmed heap) and faults its ~2000 pages
    # in again on the next allocation; with the setting the pages stay and are reused
    assert before >= 5 * 2048
    assert after < before / 20


def test_disabled_by_environment():
    out = subprocess.run([sys.executable, "-c", "from rtmkit.allocator import keep_freed_memory as k; print(k())"],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "RTMKIT_NO_MALLOPT": "1"})
    assert out.stdout.strip() == "False", out.stderr
