"""archdsl/autodiff/allocator.py: a training run reuses freed memory instead of re-faulting it."""
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import resource, sys, numpy as np
    from archdsl.autodiff.allocator import keep_freed_memory, reused_memory
    MIB = int(sys.argv[1])
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def steps(n):                                  # arrays allocated, touched and freed n times
        for _ in range(n):
            a = np.ones(MIB << 18, np.float32); b = np.ones(MIB << 17, np.float32); del a, b
    if sys.argv[2] == "run":
        with reused_memory() as tuned:
            steps(3)                               # warm up: the heap grows once
            f0 = faults(); steps(10); f1 = faults()
        f2 = faults(); steps(3); after = faults() - f2  # the defaults are back
    else:
        tuned = keep_freed_memory()
        assert keep_freed_memory() == tuned        # once per process, same answer
        steps(3); f0 = faults(); steps(10); f1 = faults(); after = -1
    print(tuned, f1 - f0, after)
""")


def child(mib, mode, **env):
    p = subprocess.run([sys.executable, "-c", CHILD, str(mib), mode], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    tuned, faults, after = p.stdout.split()
    return tuned == "True", int(faults), int(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.parametrize("mib", [64, 320])        # below and above any mmap threshold glibc allows
@pytest.mark.parametrize("mode", ["run", "process"])
def test_freed_memory_is_reused_without_page_faults(mib, mode):
    tuned, faults, after = child(mib, mode)
    if not tuned:
        pytest.skip("not glibc")
    # fresh mappings fault on first touch (per page, or per huge page with THP); reused heap
    # memory does not fault again
    tuned_off, faults_off, _ = child(mib, mode, ARCHDSL_MALLOC="default")
    assert not tuned_off
    pages = 10 * (mib + mib // 2) // 2                              # a fault per 2 MiB page at least
    assert faults_off >= pages, faults_off
    assert faults * 10 < faults_off, (faults, faults_off)
    if mode == "run":                      # after the run the memory went back: fresh faults again
        assert after >= 3 * (mib + mib // 2) // 2, after


def test_trainer_runs_inside_reused_memory(monkeypatch):
    """Every training run (supervised and GAN policies) enters reused_memory through training_run."""
    import archdsl.train.run as loop
    seen = []

    class Probe:
        def __enter__(self):
            seen.append("enter")

        def __exit__(self, *exc):
            seen.append("exit")

    monkeypatch.setattr(loop, "reused_memory", Probe)

    class T:
        threads = None
        stop_requested = False
    with loop.training_run(T()):
        assert seen == ["enter"]
    assert seen == ["enter", "exit"]


AFTER = textwrap.dedent("""
    import resource, numpy as np
    from archdsl.autodiff.allocator import reused_memory
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def steps(n):                                  # 12 MiB of arrays, touched and freed n times
        for _ in range(n):
            a = np.ones(2 << 20, np.float32); b = np.ones(1 << 20, np.float32); del a, b
    with reused_memory() as tuned:
        steps(3)
    steps(3)
    f0 = faults(); steps(10)
    print(tuned, faults() - f0)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_after_a_run_arrays_below_the_mmap_ceiling_come_from_the_heap():
    """A run's mallopt calls turn glibc's dynamic mmap threshold off for the rest of the process;
    the run leaves it where that rule settles (32 MiB), not at the fixed 128 KiB default that made
    every larger array a fresh mapping faulted page by page (at least one fault per 2 MiB)."""
    p = subprocess.run([sys.executable, "-c", AFTER], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    tuned, faults = p.stdout.split()
    if tuned != "True":
        pytest.skip("not glibc")
    assert int(faults) < 10, faults          # 10 steps of 12 MiB: 60 faults at least if mapped
