"""archdsl/autodiff/allocator.py: `archdsl train` keeps freed memory for the next step."""
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import resource, numpy as np
    from archdsl.autodiff.allocator import keep_freed_memory
    tuned = keep_freed_memory()
    assert keep_freed_memory() == tuned            # once per process, same answer
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    # 64 MiB: above the largest mmap threshold glibc's own adaptation reaches (32 MiB)
    for _ in range(3):                             # warm up: the heap grows once
        a = np.ones(16 << 20, np.float32); del a
    f0 = faults()
    for _ in range(10):                            # 64 MiB allocated, touched and freed 10 times
        a = np.ones(16 << 20, np.float32); del a
    print(tuned, faults() - f0)
""")


def child(**env):
    p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    tuned, faults = p.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_memory_is_reused_without_page_faults():
    tuned, faults = child()
    if not tuned:
        pytest.skip("not glibc")
    # fresh mappings fault on first touch (per page, or per huge page with THP); reused heap
    # memory does not fault again
    tuned_off, faults_off = child(ARCHDSL_MALLOC="default")
    assert not tuned_off
    assert faults_off >= 10 * 32, faults_off                     # at least a fault per 2 MiB page
    assert faults * 10 < faults_off, (faults, faults_off)
