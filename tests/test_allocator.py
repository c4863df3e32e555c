"""rtmkit.allocator: after keep_freed_memory(), large tensors reuse freed pages instead of page-faulting."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, torch
from rtmkit.allocator import keep_freed_memory

def faults():
    # allocate, touch and free ~8 MiB tensors, a little larger each time, like the activations of forward passes.
    # By default glibc serves each from fresh mmap pages (its dynamic threshold only rises to the last size freed),
    # so every one faults its ~2000 pages in; kept in the heap, freed blocks are reused.
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for k in range(20):
        x = torch.empty((8 * 1024 * 1024 + k * 65536) // 4)
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
    assert before >= 20 * 1500  # ~2000 pages each
    assert after < before / 20


def test_disabled_by_environment():
    out = subprocess.run([sys.executable, "-c", "from rtmkit.allocator import keep_freed_memory as k; print(k())"],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "RTMKIT_NO_MALLOPT": "1"})
    assert out.stdout.strip() == "False", out.stderr
