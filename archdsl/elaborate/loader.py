"""Reading specs and their imports into one namespace of definitions and sections."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArchError, Span, did_you_mean, raise_errors
from ..syntax import ast as A
from ..syntax import parser as _parser
from ..syntax.parser import parse

MAX_IMPORT_DEPTH = 32
STDLIB_PREFIX = "std/"      # `import "std/transformer.arch"` reads archdsl/stdlib/transformer.arch


def stdlib_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "stdlib"


@dataclass(eq=False)
class Namespace:
    """Every model, block and section visible from the main file (its own and imported)."""
    file: str
    source: str
    definitions: dict[str, A.Definition] = field(default_factory=dict)
    sections: list[A.Section] = field(default_factory=list)
    own_models: list[str] = field(default_factory=list)    # models defined in the main file, in order
    files: list[str] = field(default_factory=list)
    seen: set = field(default_factory=set)      # resolved paths already loaded

    @property
    def models(self) -> dict[str, A.Definition]:
        return {k: d for k, d in self.definitions.items() if d.kind == "model"}


def load(text: str | None = None, path: str | os.PathLike | None = None, *,
         buffers: dict | None = None, parse_file=None) -> Namespace:
    """The namespace of a spec: `path` alone reads the file; `text` alone is a spec without a
    file (imports relative to the working directory); both: `text` is the content of `path`
    (an editor's unsaved buffer). `buffers` (resolved path -> text) are read instead of those
    files, and `parse_file(text, file) -> Module` stands in for `parse` (the language server
    passes its open documents and a cache of parsed modules)."""
    if path is not None:
        if text is None:
            text = read_spec(Path(path))
        file = str(path)
    else:
        file = "<string>"
    ns = Namespace(file, text)
    errors: list[ArchError] = []
    _load_into(ns, text, file, Path(file).resolve().parent if path is not None else Path.cwd(),
               stack=[str(Path(file).resolve()) if path is not None else file], errors=errors, main=True,
               io=(buffers or {}, parse_file or parse))
    raise_errors(errors)
    return ns


def import_target(path: str, base: Path) -> Path:
    """The file `import "path"` names, from a file in folder `base` (`std/...`: the standard library)."""
    if path.startswith(STDLIB_PREFIX):
        return (stdlib_dir() / path[len(STDLIB_PREFIX):]).resolve()
    return (base / path).resolve()


def read_spec(p: Path, span: Span | None = None) -> str:
    """The text of a spec file, read through the one checked path every command uses: an
    .arch file (also after following links), a regular file (a FIFO is opened without blocking and
    refused, a device never read), at most 4 x MAX_SOURCE_CHARS bytes, valid UTF-8. `span`: the
    import statement, for errors about an imported file."""
    p = Path(p)
    if p.suffix != ".arch":
        raise ArchError(f"{p} is not an .arch file", span, "archdsl only reads .arch specs")
    limit = 4 * _parser.MAX_SOURCE_CHARS        # bytes (UTF-8 takes at most 4 a character)
    try:
        real = p.resolve()
        if real.suffix != ".arch":     # a link named x.arch to some other file
            raise ArchError(f"{p} is not an .arch file (it links to {real})", span, "archdsl only reads .arch specs")
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        with open(os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise ArchError(f"{p} is a directory, not an .arch file", span)
            if not stat.S_ISREG(st.st_mode):    # a FIFO or a device would block or never end
                raise ArchError(f"{p} is not a regular file", span, "archdsl only reads .arch specs")
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise ArchError(f"no such file: {p}", span) from None
    except IsADirectoryError:
        raise ArchError(f"{p} is a directory, not an .arch file", span) from None
    except (OSError, RuntimeError, ValueError) as e:    # a symlink loop (RuntimeError before Python
        # 3.13); a NUL character in the path (ValueError)
        raise ArchError(f"cannot read {p}: {getattr(e, 'strerror', None) or e}", span) from None
    if len(data) > limit:
        raise ArchError(f"{p} is larger than {limit:,} bytes, too large for a spec", span,
                        "raise archdsl.syntax.parser.MAX_SOURCE_CHARS if it is meant to be this large")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # point at the bad byte (line and column as the parser would count them)
        text = data.decode("utf-8", "replace")
        before = data[:e.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        if span is not None:        # an import: the error belongs to the importing line
            raise ArchError(f"{p} is not valid UTF-8 (byte {e.start}, line {line})", span) from None
        raise ArchError(f"{p} is not valid UTF-8 (byte {e.start})", Span(str(p), line, col, line, col + 1, text),
                        "save the file as UTF-8") from None


def _load_into(ns: Namespace, text: str, file: str, base: Path, stack: list[str],
               errors: list[ArchError], main: bool, io=({}, parse)) -> None:
    buffers, parse_file = io
    module = parse_file(text, file)
    ns.files.append(file)
    ns.seen.add(stack[-1])
    for item in module.items:
        if isinstance(item, A.Import):
            try:
                target = import_target(item.path, base)
                if item.path.startswith(STDLIB_PREFIX) and stdlib_dir().resolve() not in target.parents:
                    errors.append(ArchError(f"'{item.path}' is outside the standard library", item.span))
                    continue
            except (OSError, RuntimeError, ValueError) as e:   # a symlink loop (RuntimeError before
                # Python 3.13); a NUL character in the path (ValueError)
                errors.append(ArchError(f"cannot import '{item.path}': {getattr(e, 'strerror', None) or e}",
                                        item.span))
                continue
            key = str(target)
            if key in stack:
                chain = " -> ".join(Path(s).name for s in stack[stack.index(key):] + [key])
                errors.append(ArchError(f"import cycle: {chain}", item.span,
                                        "move the shared blocks into a third file that both import"))
                continue
            if key in ns.seen:
                continue    # already imported through another path (a diamond is fine)
            if len(stack) >= MAX_IMPORT_DEPTH:
                errors.append(ArchError(f"imports nested deeper than {MAX_IMPORT_DEPTH} files", item.span,
                                        "flatten the import chain, or raise "
                                        "archdsl.elaborate.loader.MAX_IMPORT_DEPTH"))
                continue
            try:
                sub = buffers[key] if key in buffers else read_spec(target, item.span)
                if not target.exists():
                    raise ArchError(f"no such file: {item.path}", item.span)
            except ArchError as e:
                if "no such file" in e.message:
                    if item.path.startswith(STDLIB_PREFIX):
                        have = sorted(p.name for p in stdlib_dir().glob("*.arch"))
                        e = ArchError(f"no standard-library file '{item.path}'", item.span,
                                      did_you_mean(item.path[len(STDLIB_PREFIX):], have)
                                      or f"the standard library has: {', '.join(have) or 'nothing yet'}")
                    else:
                        e = ArchError(f"cannot import '{item.path}': no such file (looked in {base})", item.span,
                                      "import paths are relative to the importing file")
                errors.append(e)
                continue
            try:
                _load_into(ns, sub, str(target), target.parent, stack + [key], errors, main=False, io=io)
            except ArchError as e:
                errors.append(e)
        elif isinstance(item, A.Definition):
            if item.name in _builtin_layers():
                # a name lookup finds the built-in layer first: the definition would be ignored
                errors.append(ArchError(f"{item.kind} '{item.name}' has the name of a built-in layer",
                                        item.name_span, f"rename it, e.g. 'My{item.name}': the built-in "
                                        f"{item.name} keeps its name in every spec"))
                continue
            prev = ns.definitions.get(item.name)
            if prev is not None:
                errors.append(ArchError(f"'{item.name}' is defined twice (first at {prev.name_span})",
                                        item.name_span, "rename one of them"))
                continue
            ns.definitions[item.name] = item
            if main and item.kind == "model":
                ns.own_models.append(item.name)
        elif isinstance(item, A.Section):
            if main:
                ns.sections.append(item)


def _builtin_layers() -> dict:
    from ..ops.base import load_all
    return load_all()
