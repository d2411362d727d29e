"""What the bench scripts share: a description of the machine they ran on, and peak-RSS readings."""
from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU, cores, OS and the 1-minute load average, for the reports' machine line."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, load avg {load:.2f}"


def write_results(path: Path, name: str, text: str, title: str) -> None:
    """Replace the block between `<!-- NAME results -->` and `<!-- /NAME results -->` in a report
    (created with `title` when missing), written atomically."""
    from archdsl.fileio import atomic_write
    begin, end = f"<!-- {name} results -->", f"<!-- /{name} results -->"
    doc = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n\n{begin}\n{end}\n"
    if begin not in doc:
        doc += f"\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    atomic_write(path, f"{head}{begin}\n{text}{end}{rest.split(end, 1)[1]}")
def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux


def proc_status_kib(field: str) -> int | None:
    """A KiB field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux: clear_refs 5) and return it (KiB).
    Without it the peak is the imports' (torch's import alone peaks above a small network's
    training), and the delta reads 0. Falls back to ru_maxrss elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss = proc_status_kib("VmRSS")
        if rss is not None:
            return rss
    except OSError:
        pass
    return maxrss_kib()


def peak_rss_kib() -> int:
    hwm = proc_status_kib("VmHWM")
    return hwm if hwm is not None else maxrss_kib()
