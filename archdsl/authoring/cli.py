"""CLI commands of the authoring tools (issue 9): `archdsl fmt`, `archdsl show`, `archdsl report`.

`add_commands(sub)` registers them (archdsl/cli.py calls it, as it does train/cli.py). The
flags of existing commands (`summary --explain`, `render --unroll K / --receptive-field LAYER`)
are wired in archdsl/cli.py (through archdsl/targets.py, which draws with authoring/views.py).
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

from ..errors import ArchError


def _read(path: str) -> str:
    """A spec's text ('-': stdin), read through the loader's checked path like every command
    (.arch files only, no FIFO or device, size limit, UTF-8)."""
    if path == "-":
        return sys.stdin.read()
    from ..elaborate.loader import read_spec
    return read_spec(Path(path))


def _diagnostic(err: ArchError) -> str:
    """The error as archdsl prints it, with a highlighted excerpt on a terminal."""
    from .highlight import excerpt_style
    return err.format(excerpt_style(sys.stderr))


def _files(paths: list[str]) -> list[str]:
    """FILE arguments; a directory stands for the .arch files under it."""
    out = []
    for f in paths:
        p = Path(f)
        if f != "-" and p.is_dir():
            found = sorted(str(x) for x in p.rglob("*.arch"))
            if not found:
                raise ArchError(f"no .arch files under {p}")
            out.extend(found)
        else:
            out.append(f)
    return out


def cmd_fmt(args) -> int:
    from ..fileio import atomic_write
    from .fmt import format_source
    failed = changed = 0
    files = _files(args.files)
    for f in files:
        try:
            src = _read(f)
            new = format_source(src, "<stdin>" if f == "-" else f)
        except ArchError as err:
            failed += 1
            print(_diagnostic(err), file=sys.stderr)
            continue
        if f == "-":
            if args.check:
                changed += new != src
                sys.stdout.writelines(difflib.unified_diff(src.splitlines(True), new.splitlines(True),
                                                           "a/<stdin>", "b/<stdin>"))
            else:
                sys.stdout.write(new)
            continue
        if new == src:
            continue
        changed += 1
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(src.splitlines(True), new.splitlines(True),
                                                       f"a/{f}", f"b/{f}"))
        else:
            atomic_write(f, new)
            print(f"reformatted {f}", file=sys.stderr)
    if args.check and changed:
        print(f"{changed} file{'s' if changed != 1 else ''} would be reformatted", file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_show(args) -> int:
    from .highlight import highlight, use_color
    text = _read(args.file)
    color = {"always": True, "never": False}.get(args.color, None)
    if color is None:
        color = use_color(sys.stdout)
    if args.line_numbers:
        lines = text.splitlines()
        width = len(str(len(lines)))
        out = "".join(f"{i + 1:>{width}} | {highlight(line, color)}\n" for i, line in enumerate(lines))
    else:
        out = highlight(text, color)
    sys.stdout.write(out)
    return 0


def cmd_report(args) -> int:
    from ..api import compile, parse_set
    from ..fileio import announce, refuse_overwriting_inputs
    from .report import write_report
    refuse_overwriting_inputs(args.output, [args.file])     # before the work (the imports: when writing)
    out = write_report(compile(Path(args.file)), args.output, model=args.model, overrides=parse_set(args.set))
    announce(out, f"wrote {out}")
    return 0


def add_commands(sub) -> None:
    from ..cliargs import output_file
    p = sub.add_parser("fmt", help="format .arch files canonically (in place)")
    p.add_argument("files", nargs="+", metavar="FILE", help=".arch files or directories ('-': stdin to stdout)")
    p.add_argument("--check", action="store_true",
                   help="change nothing; print a diff and exit 1 if a file is not formatted")
    p.set_defaults(fn=cmd_fmt)

    p = sub.add_parser("show", help="print a spec with syntax highlighting")
    p.add_argument("file", help="an .arch spec ('-': stdin)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="auto (default): colour when stdout is a terminal and NO_COLOR is unset")
    p.add_argument("-n", "--line-numbers", action="store_true", help="number the lines")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("report", help="one self-contained HTML page: drawing, summary, explained shapes, source")
    p.add_argument("file", help="an .arch spec")
    p.add_argument("--model", "-m", help="only this model of the file (default: every model)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="override a model parameter, e.g. --set classes=10")
    p.add_argument("-o", "--output", required=True, type=output_file, help="report.html")
    p.set_defaults(fn=cmd_report)
