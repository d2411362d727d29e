#!/usr/bin/env python
"""A long fuzz campaign over the archdsl front end (parser, elaboration, shape checks, lowering).

    python tools/fuzz_campaign.py --minutes 10                  # both generators, all cores
    python tools/fuzz_campaign.py --minutes 2 --mode mutate --jobs 1 --seed 7
    python tools/fuzz_campaign.py --replay fuzz-findings/       # re-run saved inputs

Cases come from the same generators as tests/test_fuzz.py (tests/fuzzlib.py): random
grammar-aware programs, single-op probes (every registered op on inputs of any rank and dtype,
with edge-value arguments), random mutations of every shipped spec (specs/*.arch), and
file-system and data-file attacks (`--mode files`: hostile output paths, FIFOs, links to system
files, damaged or lying .npz archives, zip bombs, checkpoints with corrupt metadata, run
directories that hold a run or are locked), each running a real `archdsl` command. The oracle is
the same too: success, or an ArchError with a valid span (for file attacks: exit 0, 1 or 2, no
input changed, no FIFO, link or directory replaced, no temporary file left, nothing written
outside the case's folder); anything else is a finding. Each distinct finding (kind + the
archdsl frame it came from) has its first inputs saved to the output folder as
`<kind>-<n>.arch` (a file attack: `<kind>-<n>.case`, its seed) with the error beside it in
`<kind>-<n>.txt`.

Prints cases, cases per second, outcomes and the findings; exits 1 if there were findings.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import fuzzlib  # noqa: E402

KEEP_PER_FINDING = 3


def _worker(args) -> dict:
    worker, seed, deadline, mode, out, lower = args
    fuzzlib.HEAVY_NESTING = True
    rnd = random.Random(seed)
    c = fuzzlib.Chooser(rnd=rnd)
    wd = fuzzlib.Workdir()
    specs = [(f.name, f.read_text(encoding="utf-8")) for f in fuzzlib.spec_files()]
    fuzzlib.warm_up()
    if mode in ("files", "both"):
        fuzzlib.staged_files()           # the files every file attack starts from, made once
    outcomes: Counter = Counter()
    sources: Counter = Counter()
    findings: dict[str, dict] = {}
    cases = 0
    slowest = (0.0, "")
    try:
        while time.time() < deadline:
            r = rnd.random()
            if mode == "files" or (mode == "both" and r < 0.15):
                seed_of_case = rnd.getrandbits(48)
                root = Path(tempfile.mkdtemp(dir=wd.path, prefix="files-"))
                t0 = time.perf_counter()
                try:
                    outcome, finding = fuzzlib.run_file_case(fuzzlib.seeded_file_case(seed_of_case, root))
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                slowest = max(slowest, (time.perf_counter() - t0, "file-attack"))
                cases += 1
                _tally(dict(outcome=outcome, finding=finding, data=json.dumps({"seed": seed_of_case}).encode(),
                            origin="file-attack", as_text=False), outcomes, sources, findings, out, worker)
                continue
            if mode == "ops" or (mode == "both" and r < 0.3):
                data, origin = fuzzlib.op_program(c).encode(), "op-probe"
            elif mode == "generate" or (mode == "both" and r < 0.6):
                data, origin = fuzzlib.program(c).encode(), "generated"
            else:
                name, text = rnd.choice(specs)
                data, origin = fuzzlib.mutate(c, text), f"mutated {name}"
            as_text = rnd.random() < 0.1
            t0 = time.perf_counter()
            outcome, finding = fuzzlib.run_case(data, wd.path, lower=lower, as_text=as_text)
            dt = time.perf_counter() - t0
            if dt > slowest[0]:
                slowest = (dt, origin)
            cases += 1
            _tally(dict(outcome=outcome, finding=finding, data=data, origin=origin, as_text=as_text),
                   outcomes, sources, findings, out, worker)
    finally:
        wd.close()
    return {"cases": cases, "outcomes": dict(outcomes), "sources": dict(sources), "findings": findings,
            "slowest": slowest}


def _tally(case: dict, outcomes: Counter, sources: Counter, findings: dict, out: Path, worker: int) -> None:
    """Count one case's outcome and keep the first inputs of each distinct finding."""
    outcome, finding, data, origin = case["outcome"], case["finding"], case["data"], case["origin"]
    outcomes[outcome] += 1
    sources[origin.split()[0]] += 1
    if finding is None:
        return
    key = finding.key()
    f = findings.setdefault(key, {"key": key, "count": 0, "summary": finding.summary, "saved": []})
    f["count"] += 1
    if len(f["saved"]) < KEEP_PER_FINDING:
        out.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(data).hexdigest()[:10]
        stem = out / f"{finding.kind}-{worker}-{digest}"
        ext = ".case" if origin == "file-attack" else ".arch"
        stem.with_suffix(ext).write_bytes(data)
        stem.with_suffix(".txt").write_text(
            f"{finding.summary}\norigin: {origin} (as_text={case['as_text']})\nkey: {key}\n\n{finding.detail}")
        f["saved"].append(str(stem.with_suffix(ext)))


def replay(paths: list[Path]) -> int:
    wd = fuzzlib.Workdir()
    fuzzlib.warm_up()
    bad = 0
    try:
        files = [f for p in paths for f in (sorted([*p.glob("*.arch"), *p.glob("*.case")]) if p.is_dir() else [p])]
        for f in files:
            if f.suffix == ".case":          # a file attack: drawn again from its seed
                root = Path(tempfile.mkdtemp(dir=wd.path, prefix="files-"))
                case = fuzzlib.seeded_file_case(json.loads(f.read_text())["seed"], root)
                outcome, finding = fuzzlib.run_file_case(case)
                shutil.rmtree(root, ignore_errors=True)
            else:
                outcome, finding = fuzzlib.run_case(f.read_bytes(), wd.path)
            status = "FINDING " + finding.summary if finding else outcome
            bad += finding is not None
            print(f"{f}: {status}")
    finally:
        wd.close()
    print(f"{len(files)} inputs, {bad} still failing")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    ap.add_argument("--seed", type=int, default=None, help="base seed (default: from the clock)")
    ap.add_argument("--mode", choices=("both", "generate", "mutate", "ops", "files"), default="both",
                    help="both (all four sources, the default), generate, mutate, ops or files")
    ap.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="folder for crashing inputs")
    ap.add_argument("--no-lower", action="store_true", help="skip ONNX lowering of specs that compile")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    ap.add_argument("--replay", type=Path, nargs="+", help="re-run saved inputs instead of fuzzing")
    a = ap.parse_args(argv)
    if a.replay:
        return replay(a.replay)
    seed = a.seed if a.seed is not None else int(time.time())
    start = time.time()
    deadline = start + a.minutes * 60
    jobs = [(i, seed * 1000 + i, deadline, a.mode, a.out, not a.no_lower) for i in range(max(1, a.jobs))]
    print(f"fuzzing for {a.minutes:g} min with {len(jobs)} worker(s), seed {seed}, "
          f"{len(fuzzlib.spec_files())} specs, mode {a.mode}", flush=True)
    if len(jobs) == 1:
        results = [_worker(jobs[0])]
    else:
        with mp.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.map(_worker, jobs)
    elapsed = time.time() - start
    cases = sum(r["cases"] for r in results)
    outcomes: Counter = Counter()
    sources: Counter = Counter()
    findings: dict[str, dict] = {}
    for r in results:
        outcomes.update(r["outcomes"])
        sources.update(r["sources"])
        for k, f in r["findings"].items():
            g = findings.setdefault(k, {**f, "count": 0, "saved": []})
            g["count"] += f["count"]
            g["saved"] += f["saved"]
    slowest = max((r["slowest"] for r in results), default=(0.0, ""))
    print(f"cases: {cases:,} in {elapsed / 60:.1f} min ({cases / elapsed:.1f} cases/s over {len(jobs)} worker(s))")
    print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items())))
    print("inputs: " + ", ".join(f"{k} {v:,}" for k, v in sorted(sources.items())))
    print(f"slowest case: {slowest[0]:.2f}s ({slowest[1]})")
    print(f"findings: {len(findings)} distinct, {sum(f['count'] for f in findings.values())} cases")
    for f in sorted(findings.values(), key=lambda f: -f["count"]):
        print(f"  [{f['count']}x] {f['key']}\n        {f['summary']}\n        e.g. {f['saved'][0] if f['saved'] else ''}")
    if a.json:
        a.json.write_text(json.dumps({"seed": seed, "minutes": elapsed / 60, "jobs": len(jobs), "cases": cases,
                                      "cases_per_s": cases / elapsed, "outcomes": dict(outcomes),
                                      "findings": list(findings.values())}, indent=2))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
