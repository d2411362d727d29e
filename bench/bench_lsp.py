"""Diagnostics latency of `archdsl lsp` after an edit, on specs/bert.arch and specs/resnet50.arch,
against checking the same text without the server, measured in the same run.

What is timed, per spec, for four edits in turn (a real edit of a default, the edit undone, an
edit that makes a shape error, the fix):
  * server     `archdsl lsp` started once as a subprocess and driven over stdio by pygls's LSP
               client, as an editor drives it: from sending textDocument/didChange (the whole
               text) to receiving the textDocument/publishDiagnostics of that version. Each
               change is re-parsed, re-loaded and re-elaborated (every model of the file, traced
               for hover and inlay hints); what stays warm is the process, the parser, the op
               registry and the parsed imports. The diagnostics are checked (none after a clean
               edit, the shape error after the bad one), so the figure is of work really done.
  * compile    the same text checked in this (warm) process from scratch: `Spec(load(text, path))`,
               what `archdsl check` does after Python has started: imports parsed again, no trace.
  * check      `archdsl check FILE` in a fresh process (a copy of the spec and its imports in a
               temporary folder): the round trip to a terminal that the server saves.
The three are interleaved edit by edit, so machine load hits them alike. Reported: the median of
--reps rounds (--check-reps for the slow fresh process) and the ratios. Target: the server's
median under 200 ms.

    python bench/bench_lsp.py                  # writes the results block of bench/lsp.md
    python bench/bench_lsp.py --reps 5 --check-reps 1 --no-write

Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine, write_results  # noqa: E402  (python puts the bench folder on sys.path)

# (spec, the file's imports to copy, the edit and its undo, the error and its fix)
EDITS = {
    "bert.arch": dict(imports=[], edit=("vocab: int = 30522", "vocab: int = 30521"),
                      error=('p -> Linear(2, name="nsp")', 'p -> Conv2d(2, 3, name="nsp")')),
    "resnet50.arch": dict(imports=["resnet_blocks.arch"], edit=("classes: int = 1000", "classes: int = 100"),
                          error=("GlobalAvgPool -> Flatten -> Linear", "GlobalAvgPool -> Linear")),
}
STEPS = ("edit", "undo", "error", "fix")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=15, help="rounds of the four edits (median; default 15)")
    p.add_argument("--check-reps", type=int, default=3, help="rounds that also run `archdsl check` (default 3)")
    p.add_argument("--out", default=str(ROOT / "bench" / "lsp.md"), help="Markdown file whose results block is replaced")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


def texts(spec: str, rep: int) -> dict[str, str]:
    """The text after each step of round `rep`. A comment numbers every text, so that none was
    seen before (the server keeps parsed modules by their text: an editor's texts are new)."""
    base = (ROOT / "specs" / spec).read_text(encoding="utf-8")
    e, err = EDITS[spec]["edit"], EDITS[spec]["error"]
    assert e[0] in base and err[0] in base, spec
    steps = {"edit": base.replace(e[0], e[1]), "undo": base, "error": base.replace(err[0], err[1]), "fix": base}
    return {step: f"{text}# round {rep}, {step}\n" for step, text in steps.items()}


class Server:
    """`archdsl lsp` in a subprocess, and a pygls client that times edit -> diagnostics."""

    def __init__(self):
        from lsprotocol import types as T
        from pygls.lsp.client import LanguageClient
        self.T = T
        self.client = LanguageClient("archdsl-bench", "1")
        self.waiting: dict = {}

        @self.client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def diagnostics(ls, params):
            fut = self.waiting.pop((params.uri, params.version), None)
            if fut is not None:
                fut.set_result((time.perf_counter(), list(params.diagnostics)))

    async def start(self, root: Path):
        from pygls import uris
        T = self.T
        await self.client.start_io(sys.executable, "-m", "archdsl", "lsp")
        folder = uris.from_fs_path(str(root))
        await self.client.initialize_async(T.InitializeParams(
            capabilities=T.ClientCapabilities(), root_uri=folder,
            workspace_folders=[T.WorkspaceFolder(uri=folder, name="bench")]))
        self.client.initialized(T.InitializedParams())

    async def send(self, uri: str, version: int, text: str, first: bool = False) -> tuple[float, list]:
        """Seconds from the change to its diagnostics, and the diagnostics."""
        T = self.T
        fut = asyncio.get_running_loop().create_future()
        self.waiting[(uri, version)] = fut
        t0 = time.perf_counter()
        if first:
            self.client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
                uri=uri, language_id="arch", version=version, text=text)))
        else:
            self.client.text_document_did_change(T.DidChangeTextDocumentParams(
                text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[T.TextDocumentContentChangeWholeDocument(text=text)]))
        t1, diags = await fut
        return t1 - t0, diags

    async def stop(self):
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()


def compile_once(text: str, path: Path) -> tuple[float, int]:
    from archdsl.api import Spec
    from archdsl.elaborate.loader import load
    from archdsl.errors import ArchError, ArchErrors
    t0 = time.perf_counter()
    try:
        Spec(load(text, path))
        n = 0
    except ArchErrors as e:
        n = len(e.errors)
    except ArchError:
        n = 1
    return time.perf_counter() - t0, n


def check_once(text: str, path: Path) -> tuple[float, int]:
    path.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "archdsl", "check", str(path)], capture_output=True, text=True)
    return time.perf_counter() - t0, r.returncode


async def measure(args, work: Path) -> dict:
    from pygls import uris
    server = Server()
    await server.start(work)
    times = {(s, k, step): [] for s in EDITS for k in ("server", "compile", "check") for step in STEPS}
    version = {}
    for spec in EDITS:          # open each file once (not timed)
        uri = uris.from_fs_path(str(work / spec))
        version[spec] = 1
        await server.send(uri, 1, (work / spec).read_text(encoding="utf-8"), first=True)
    for rep in range(args.reps + 1):            # round 0 warms up, untimed
        for spec in EDITS:
            uri = uris.from_fs_path(str(work / spec))
            for step, text in texts(spec, rep).items():
                version[spec] += 1
                dt, diags = await server.send(uri, version[spec], text)
                want_error = step == "error"
                if bool(diags) != want_error:
                    raise RuntimeError(f"{spec} {step}: unexpected diagnostics {[d.message for d in diags]}")
                ct, n = compile_once(text, work / spec)
                if bool(n) != want_error:
                    raise RuntimeError(f"{spec} {step}: compile gave {n} errors")
                if rep == 0:
                    continue
                times[(spec, "server", step)].append(dt)
                times[(spec, "compile", step)].append(ct)
                if rep <= args.check_reps:
                    kt, rc = check_once(text, work / f"check_{spec}")
                    if (rc != 0) != want_error:
                        raise RuntimeError(f"{spec} {step}: archdsl check exited {rc}")
                    times[(spec, "check", step)].append(kt)
    await server.stop()
    return times


def main(argv=None) -> dict:
    args = _args(argv)
    work = Path(tempfile.mkdtemp(prefix="archdsl-bench-lsp-"))
    try:
        for spec, e in EDITS.items():
            for f in [spec] + e["imports"]:
                shutil.copy(ROOT / "specs" / f, work / f)
        t0 = time.perf_counter()
        times = asyncio.run(measure(args, work))
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) * 1000 for k, v in times.items() if v}
    rows = [f"| spec | edit | server: edit → diagnostics (median of {args.reps}) | compile in-process "
            f"(median of {args.reps}) | `archdsl check`, fresh process (median of {args.check_reps}) | "
            "compile / server | check / server |", "|---|---|---:|---:|---:|---:|---:|"]
    for spec in EDITS:
        for step in STEPS:
            s, c, k = (med.get((spec, w, step)) for w in ("server", "compile", "check"))
            rows.append(f"| {spec} | {step} | {s:.1f} ms | {c:.1f} ms | {k:,.0f} ms | {c / s:.2f}x | {k / s:.1f}x |")
    worst = max(v for (spec, who, step), v in med.items() if who == "server")
    info = (f"{machine()}; Python {platform.python_version()}, pygls {_version('pygls')}, "
            f"lsprotocol {_version('lsprotocol')}; {wall:.0f}s in all. Slowest server median: {worst:.1f} ms "
            f"(target: under 200 ms).")
    text = info + "\n\n" + "\n".join(rows) + "\n"
    print(text)
    if not args.no_write:
        write_results(Path(args.out), "bench_lsp", text, title="Language server latency")
        print(f"wrote {args.out}")
    return {"median_ms": {" ".join(k): v for k, v in med.items()}}


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
