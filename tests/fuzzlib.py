"""Fuzzing the front end: a grammar-aware program generator, a mutator of the shipped specs,
and the oracle that judges one case.

Shared by tests/test_fuzz.py (a bounded, deterministic run through hypothesis) and
tools/fuzz_campaign.py (a long random campaign). Both generators are written once against a
`Chooser`, which draws its choices either from hypothesis (`draw`, so failures shrink) or from
a `random.Random` (fast, for the campaign).

The oracle (`run_case`): a case may compile, or raise an ArchError whose span (every error that
comes from a spec has one) lies inside its file. For a spec that compiles, each model is also
costed, checked against the resource limit and, when small, lowered to ONNX; each of these may
again succeed or raise an ArchError. Anything else (another exception, a RecursionError, running
past the time limit) is a finding.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "specs"


def spec_files() -> list[Path]:
    return sorted(SPEC_DIR.glob("*.arch"))


# -- choices ---------------------------------------------------------------------------------
class Chooser:
    """Where choices come from: hypothesis' `draw` or a `random.Random`."""

    def __init__(self, draw=None, rnd=None):
        self.draw, self.rnd = draw, rnd
        if draw is not None:
            from hypothesis import strategies as st
            self._st = st

    def int(self, lo: int, hi: int) -> int:
        if self.draw is not None:
            return self.draw(self._st.integers(lo, hi))
        return self.rnd.randint(lo, hi)

    def choice(self, seq):
        seq = list(seq)
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, p: float) -> bool:
        return self.int(0, 999) < p * 1000

    def bytes(self, n: int) -> bytes:
        if self.draw is not None:
            return self.draw(self._st.binary(min_size=n, max_size=n))
        return bytes(self.rnd.getrandbits(8) for _ in range(n))


# -- grammar-aware generation --------------------------------------------------------------------
ACT = ["ReLU", "Tanh", "Sigmoid", "GELU", "Identity", "LeakyReLU(0.1)", "ELU", "Softmax", "LogSoftmax(axis=1)",
       "Dropout(0.1)", "GELU(approximate='tanh')"]
INITS = ["zeros", "ones", "constant(0.5)", "normal(std=0.02)", "uniform(a=-0.1, b=0.1)", "trunc_normal(std=0.02)",
         "kaiming_normal(mode='fan_out', nonlinearity='relu')", "kaiming_uniform(a=2.2)", "xavier_uniform",
         "xavier_normal(gain=2.0)", "normal(0.02)", "constant", "trunc_normal(std=1.0, a=5.0, b=6.0)", "3"]
# tensor expressions over a tensor `{x}` of some rank: (text, rank after, or None when it depends)
MATH = [("-{x}", 0), ("{x} * 0.5", 0), ("1.0 - {x}", 0), ("{x} / 2", 0), ("2 / ({x} * {x} + 1.0)", 0),
        ("{x} ** 2", 0), ("exp({x} * 0.5)", 0), ("log(abs({x}) + 1.0)", 0), ("sqrt(abs({x}))", 0),
        ("rsqrt({x} * {x} + 1e-5)", 0), ("tanh({x}) + sigmoid({x})", 0), ("where({x} > 0, {x}, 0.0)", 0),
        ("where({x} <= 0.5, -1e9, {x})", 0), ("{x} @ {x}", None), ("{x}[:, 0]", -1), ("{x}[..., :2]", 0),
        ("{x}[:, 1:-1:2]", 0), ("{x}[-1]", -1), ("{x}[:, ::-1]", 0), ("{x}[0, 0, 0, 0, 0, 0]", None),
        ("{x} == {x}", None), ("{x} * {x} // 2", None), ("{x} + 'a'", None), ("{x}[:, 5:5]", None)]


class _Gen:
    """Builds one random, mostly-valid .arch program (as text)."""

    def __init__(self, c: Chooser):
        self.c = c
        self.params: list[str] = []      # int parameters of the model
        self.blocks: list[tuple[str, int]] = []    # (name, rank it expects)
        self.n = 0

    # small integer expressions over the parameters
    def int_expr(self, depth: int = 0) -> str:
        c = self.c
        r = c.int(0, 99)
        if r < 48 or depth >= 3:
            return str(c.choice([1, 2, 3, 4, 4, 8, 8, 16]))
        if r < 65 and self.params:
            return c.choice(self.params)
        if r < 66 or (r < 67 and c.chance(0.5)):
            return str(c.choice([0, -1, -4, 2 ** 40, 2 ** 62, 10 ** 30, 7]))
        if r < 90:
            op = c.choice(["+", "-", "*", "//", "%", "**", "+", "*"])
            return f"({self.int_expr(depth + 1)} {op} {self.int_expr(depth + 1)})"
        if r < 93:
            return f"{c.choice(['min', 'max'])}({self.int_expr(depth + 1)}, {self.int_expr(depth + 1)})"
        if r < 95:
            return f"{c.choice(['abs', 'int', 'len'])}({self.int_expr(depth + 1)})"
        return f"({self.int_expr(depth + 1)} if {self.cond()} else {self.int_expr(depth + 1)})"

    def cond(self) -> str:
        c = self.c
        r = c.int(0, 5)
        if r == 0:
            return c.choice(["true", "false"])
        if r == 1 and self.params:
            return f"{c.choice(self.params)} > {c.int(0, 8)}"
        if r == 2:
            return f"not {self.cond()}"
        if r == 3:
            return f"{self.int_expr(2)} == {self.int_expr(2)} and {c.choice(['true', 'false'])}"
        return f"{self.int_expr(2)} {c.choice(['<', '<=', '>', '>=', '!=', '=='])} {self.int_expr(2)}"

    def dim(self) -> str:
        if self.c.chance(0.1):      # symbolic dim arithmetic, valid and not
            return self.c.choice(["T", "T + 1", "2 * T", "T // 2", "T - 1", "(T + 3) // 2", "T // 0", "T + 0.5",
                                  "-T", "T * T", "T - T", "4 * (T - 1) // 2", "T * 2 ** 61", "S"])
        return str(self.c.choice([1, 2, 3, 4, 5, 8, 8, 16]))

    # one layer that (mostly) suits a tensor of `rank`; returns (text, rank after)
    def layer(self, rank: int, dtype: str = "f32") -> tuple[str, int]:
        c = self.c
        if dtype.startswith("i"):
            return f"Embedding({c.choice([5, 10, 100])}, {self.int_expr()})", rank + 1
        if c.chance(0.12):
            return self.any_op(), rank
        if c.chance(0.25):
            return c.choice(ACT), rank
        fitting = [b for b, want in self.blocks if want == rank or c.chance(0.1)]
        if fitting and c.chance(0.2):
            args = c.choice(["", "()", f"({self.int_expr()})", f"(width={self.int_expr()})"])
            return c.choice(fitting) + args, rank
        if rank == 2:
            r = c.int(0, 4)
            if r <= 2:
                bias = c.choice(["", ", bias=false", ", bias=true"])
                return f"Linear({self.int_expr()}{bias}{self.init_kw()})", 2
            if r == 3:
                return c.choice(["LayerNorm", "BatchNorm1d", "BatchNorm"]), 2
            return f"Reshape((-1, {c.choice([1, 2])}, {self.int_expr()}))", 3
        if rank == 3:
            r = c.int(0, 9)
            if r == 0:
                pad = c.choice(["0", "1", "'same'"])
                return f"Conv1d({self.int_expr()}, {c.choice([1, 3])}, padding={pad})", 3
            if r == 1:
                return f"{c.choice(['MaxPool1d', 'AvgPool1d'])}({c.choice([1, 2])})", 3
            if r == 2:
                return c.choice(["Flatten", "GlobalAvgPool -> Flatten", "SelectStep(-1)"]), 2
            if r == 3:
                kind = c.choice(["LSTM", "GRU", "RNN"])
                extra = c.choice(["", ", bidirectional=true", ", return_sequences=false", ", num_layers=2"])
                return f"{kind}({self.int_expr()}{extra})", 2 if "sequences" in extra else 3
            if r == 4:
                return f"MultiHeadAttention({c.choice([4, 8])}, {c.choice([1, 2, 4])}{c.choice(['', ', causal=true'])})", 3
            if r == 5:
                return "Transpose((0, 2, 1))", 3
            if r == 6:
                return "LayerNorm", 3
            if r == 7:
                return "PositionalEncoding(64)", 3
            return f"Linear({self.int_expr()})", 3
        if rank == 4:
            r = c.int(0, 6)
            if r <= 2:
                k = c.choice([1, 3, "(3, 1)"])
                extra = c.choice(["", ", padding=1", ", stride=2", ", padding='same'", ", bias=false",
                                  f", groups={c.choice([1, 2])}", ", dilation=2"])
                return f"Conv2d({self.int_expr()}, {k}{extra}{self.init_kw()})", 4
            if r == 3:
                return f"{c.choice(['MaxPool2d', 'AvgPool2d'])}({c.choice([1, 2, 3])}{c.choice(['', ', stride=1', ', padding=1', ', ceil_mode=true'])})", 4
            if r == 4:
                return c.choice(["BatchNorm", "BatchNorm2d", f"AdaptiveAvgPool2d({c.choice([1, 2, '(2, 1)'])})"]), 4
            if r == 5:
                return f"ConvTranspose2d({self.int_expr()}, {c.choice([2, 3])}, stride={c.choice([1, 2])})", 4
            return c.choice(["Flatten", "GlobalAvgPool -> Flatten", "GlobalMaxPool -> Flatten"]), 2
        return c.choice(["Flatten", "Identity", "ReLU"]), rank

    def init_kw(self) -> str:
        """Mostly nothing; sometimes `init=` / `bias_init=` with an initialiser, valid or not."""
        c = self.c
        if not c.chance(0.15):
            return ""
        return f", {c.choice(['init', 'init', 'bias_init'])}={c.choice(INITS)}"

    def any_op(self) -> str:
        """Any registered op, arguments generated from its schema (so new ops are fuzzed too)."""
        from archdsl.ops.base import load_all
        c = self.c
        ops = load_all()
        op = ops[c.choice(sorted(ops))]
        parts, keywords = [], False
        for a in op.args:
            if a.required or c.chance(0.25):
                v = self.arg_value(a)
                if v is None:
                    continue
                if not a.required or keywords or c.chance(0.15):
                    keywords = True
                    parts.append(f"{a.name}={v}")
                else:
                    parts.append(v)
        if c.chance(0.1):
            parts.append(f"{c.choice(['nope', 'name', 'axis', 'bias'])}={self.int_expr()}")
        return f"{op.name}({', '.join(parts)})" if parts or c.chance(0.5) else op.name

    def arg_value(self, a) -> str | None:
        c = self.c
        if a.choices and c.chance(0.8):
            v = c.choice(a.choices)
            return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        k = a.kind
        if k == "int":
            return self.int_expr()
        if k == "float":
            return c.choice(["0.0", "0.1", "0.5", "1e-5", "1", "2.5", "-1.0", "1e308"])
        if k == "bool":
            return c.choice(["true", "false"])
        if k == "str":
            return c.choice(["'none'", "'x'", "''", "'same'"])
        if k == "ints":
            return c.choice([self.int_expr(), f"({self.int_expr()}, {self.int_expr()})", "()", "(1, 2, 3)"])
        if k == "shape":
            return c.choice(["(-1,)", "(0, 2, 1)", "(0, 1)", "(-1, 4)", "(2, -1, -1)", "()", "(0, 3, 1, 2)"])
        if k == "padding":
            return c.choice(["0", "1", "'same'", "'valid'", "(1, 1)", "(1, 2, 3)", "'full'"])
        if k == "layer":
            return None
        if k == "dtype":
            return c.choice(["'f32'", "'i64'", "'q8'"])
        return self.int_expr()

    def chain(self, rank: int, dtype: str = "f32", max_len: int = 4) -> tuple[str, int]:
        parts = []
        for _ in range(self.c.int(1, max_len)):
            text, rank = self.layer(rank, dtype)
            dtype = "f32"
            parts.append(text)
        return " -> ".join(parts), rank

    def block(self) -> str:
        c = self.c
        name = f"B{len(self.blocks)}"
        rank = c.choice([2, 2, 3, 4])
        saved = self.params
        self.params = ["width"] + (["k"] if c.chance(0.3) else [])
        params = ", ".join(f"{p}: int = {c.choice([2, 4, 8])}" for p in self.params)
        typed = c.chance(0.3)
        dims = ", ".join(["N"] + [c.choice(["C", "width", "T", "8"]) for _ in range(rank - 1)])
        head = f"  input x{': f32[' + dims + ']' if typed else ''}\n"
        body, out_rank = self.chain(rank, max_len=3)
        lines = [head, f"  y = x -> {body}\n"]
        if c.chance(0.3):
            lines.append(f"  z = y if {self.cond()} else x\n")
            lines.append("  output z\n")
        elif c.chance(0.3):
            lines.append("  output y + y\n")
        else:
            lines.append("  output y\n")
        self.params = saved
        self.blocks.append((name, rank))
        sig = f"({params})" if params or c.chance(0.5) else ""
        return f"block {name}{sig} {{\n{''.join(lines)}}}\n"

    def model(self) -> str:
        c = self.c
        self.params = [f"p{i}" for i in range(c.int(0, 3))]
        sig = ", ".join(f"{p}: int = {c.choice([1, 2, 3, 4, 8])}" for p in self.params)
        kind = c.choice(["dense", "dense", "image", "seq", "tokens"])
        if kind == "dense":
            itype, rank, dtype = f"f32[N, {self.dim()}]", 2, "f32"
        elif kind == "image":
            side = c.choice(["8", "16", "16", self.dim()])
            itype, rank, dtype = f"f32[N, {c.choice([1, 3])}, {side}, {c.choice([8, 16])}]", 4, "f32"
        elif kind == "seq":
            itype, rank, dtype = f"f32[N, {c.choice(['T', '6', self.dim()])}, {c.choice([4, 8])}]", 3, "f32"
        else:
            itype, rank, dtype = "i64[N, T]", 2, "i64"
        if c.chance(0.05):
            itype = c.choice(["f32[N, (T - 1)]", "f33[N, 2]", "f32[0]", "f32[N, 2 * p0]", "f32[]", "bool[N, 4]"])
        lines = [f"  input x: {itype}\n"]
        tensors = [("x", rank, dtype)]
        for i in range(c.int(1, 5)):
            name = f"h{i}"
            src, srank, sdtype = c.choice(tensors)
            r = c.int(0, 11)
            if r == 10:         # a free parameter, broadcast against the tensor
                dims = c.choice(["1", "4", "1, 1", "2, 3", "0", "T", "p0" if self.params else "2"])
                lines.append(f"  param w{i}: {c.choice(['f32', 'f32', 'i64'])}[{dims}] = {c.choice(INITS)}\n")
                lines.append(f"  {name} = {src} {c.choice(['+', '*', '-'])} w{i}\n")
                nrank = srank
            elif r == 11:       # tensor math and subscripts
                text, delta = c.choice(MATH)
                lines.append(f"  {name} = {text.format(x=src)}\n")
                nrank = srank + delta if delta is not None else srank
            elif r <= 4:
                body, nrank = self.chain(srank, sdtype)
                lines.append(f"  {name} = {src} -> {body}\n")
            elif r == 5:
                lines.append(f"  {name} = {src} {c.choice(['+', '*', '-'])} {src}\n")
                nrank = srank
            elif r == 6:
                body, nrank = self.chain(srank, sdtype, 2)
                count = c.choice(["2", "3", "p0" if self.params else "1", "2", "0" if c.chance(0.2) else "100001"])
                var = c.choice(["", " as i"])
                lines.append(f"  {name} = {src} -> repeat {count}{var} {{ {body} }}\n")
            elif r == 7:
                lines.append(f"  {name} = ({src}, {src}) -> Concat(axis={c.choice([1, -1, 0, 5])})\n")
                nrank = srank
            elif r == 8:      # both branches keep the rank (or the next statement cannot know it)
                body = " -> ".join(c.choice(ACT) for _ in range(c.int(1, 2))) if c.chance(0.8) else self.chain(srank, sdtype, 2)[0]
                lines.append(f"  {name} = {src} if {self.cond()} else {src} -> {body}\n")
                nrank = srank
            else:
                lines.append(f"  shared{i} = Linear({self.int_expr()})\n")
                if c.chance(0.8):
                    lines.append(f"  {name} = ({src} -> shared{i}) + ({src} -> shared{i} -> ReLU)\n")
                else:
                    lines.append(f"  {name} = {src} -> shared{i} -> ReLU -> shared{i}\n")
                nrank = srank
            tensors.append((name, nrank, "f32"))
        last = tensors[-1][0]
        lines.append(f"  output {c.choice(['y = ', 'logits = ', ''])}{last}\n")
        if c.chance(0.2):
            lines.append(f"  output extra = {c.choice(tensors)[0]}\n")
        head = f"model M({sig})" if sig or c.chance(0.3) else "model M"
        return f"{head} {{\n{''.join(lines)}}}\n"

    def program(self) -> str:
        c = self.c
        out = []
        if c.chance(0.1):
            out.append(c.choice(['import "std/mlp.arch"\n', 'import "lenet5.arch"\n', 'import "nope.arch"\n']))
        for _ in range(c.int(0, 2)):
            out.append(self.block())
        out.append(self.model())
        if c.chance(0.15):
            out.append("train M {\n  loss = cross_entropy(y, label)\n  optimizer = Adam(lr=1e-3)\n"
                       f"  batch = {c.choice([1, 8, 0])}\n  epochs = 1\n  metrics = [accuracy]\n}}\n")
        if c.chance(0.05):
            out.append("gan G { generator = M  discriminator = M }\n")
        return "".join(out)


def program(c: Chooser) -> str:
    """A random, mostly valid .arch program."""
    return _Gen(c).program()


# One op at a time, on inputs of any rank (0-5), dtype and dims, with arguments drawn from the
# op's schema, including edge values: the op contract (shape rule, parameters, lowering) must
# answer every combination with a result or a ShapeError.
EDGE_VALUES = {
    "int": ["0", "1", "2", "3", "-1", "-2", "7", "64", "2 ** 40", "4611686018427387904"],
    "float": ["0.0", "0.5", "1.0", "-1.0", "1e-300", "1e300", "2"],
    "bool": ["true", "false"],
    "str": ["'none'", "'tanh'", "'padding'", "'lengths'", "'relu'", "''"],
    "ints": ["1", "2", "3", "0", "-1", "(2, 2)", "(1,)", "(1, 2, 3)", "()", "(0, 1)", "(2 ** 40, 1)"],
    "shape": ["(-1,)", "(0, 2, 1)", "(0, 1)", "(-1, 4)", "(2, -1, -1)", "()", "(0, 3, 1, 2)", "(0, 0)", "(-2, 3)",
              "(5, 0, 1)", "(0, -1)", "(1, 2, 0)", "(1, 0)"],
    "padding": ["0", "1", "'same'", "'valid'", "(1, 1)", "(1, 2, 3)", "(1, 2, 3, 4)", "-1", "(0,)"],
    "dtype": ["'f32'", "'i64'", "'bool'"],
    "any": ["1", "'x'"],
}
EDGE_DIMS = ["N", "T", "1", "2", "3", "5", "8", "16", "T - 1", "2 * T", "N + 1"]


def op_program(c: Chooser, op_name: str | None = None) -> str:
    """A one-op model: the op (`op_name`, else any registered one) on edge-case inputs and args."""
    from archdsl.ops.base import load_all
    ops = load_all()
    op = ops[op_name or c.choice(sorted(ops))]
    lo, hi = (op.n_inputs, op.n_inputs) if isinstance(op.n_inputs, int) else op.n_inputs
    k = c.int(max(0, lo - (1 if c.chance(0.05) else 0)), min(hi if hi != -1 else 4, 4) + (1 if c.chance(0.05) else 0))
    k = max(1, k)
    lines = []
    for i in range(k):
        dims = [c.choice(EDGE_DIMS) for _ in range(c.choice([0, 1, 2, 2, 3, 3, 3, 4, 4, 5]))]
        dtype = c.choice(["f32", "f32", "f32", "f32", "i64", "bool", "f16", "i32", "f64"])
        lines.append(f"  input x{i}: {dtype}[{', '.join(dims)}]\n")
    parts = []
    for a in op.args:
        if a.kind == "layer" or not (a.required or c.chance(0.4)):
            continue
        parts.append(f"{a.name}={c.choice(EDGE_VALUES.get(a.kind, ['1']))}")
    src = ", ".join(f"x{i}" for i in range(k))
    src = f"({src})" if k > 1 else src
    call = f"{op.name}({', '.join(parts)})" if parts or c.chance(0.5) else op.name
    tail = c.choice(["", "", " -> Flatten", " -> ReLU", "[0]" if op.name in ("LSTM", "GRU", "RNN") else ""])
    out = f"  output y = ({src} -> {call}){tail}\n" if tail.startswith("[") else f"  output y = {src} -> {call}{tail}\n"
    return "model M {\n" + "".join(lines) + out + "}\n"


# -- mutation of the shipped specs -------------------------------------------------------------
TOKEN_RE = re.compile(r"""\s+|\#[^\n]*|"[^"\n]*"|'[^'\n]*'|[A-Za-z_][A-Za-z_0-9]*|[0-9][0-9_.eE]*|->|\*\*|//|[=!<>]=|.""",
                      re.S)
VOCAB = ["model", "block", "input", "output", "import", "repeat", "as", "if", "else", "and", "or", "not", "true",
         "false", "train", "gan", "param", "@", "...", "exp(x)", "where(", "x[:, 0]", "normal(std=0.02)", "init=",
         "(", ")", "[", "]", "{", "}", ",", "=", ":", "->", "+", "-", "*", "/", "//",
         "%", "**", "==", "<", "x", "N", "T", "f32", "i64", "Linear", "Conv2d(", "ReLU", "0", "-1", "1.5",
         '"s"', "'", '"', "#", "\n", "std", "channels(x)", "Concat", "tied=", "name=", "repeat 3 {", "1e400"]
HUGE = ["9" * 20, "9" * 400, "9" * 5000, "1e999", "2 ** 62", "2 ** 63", "123456789012345678901234567890.5",
        "0.0", "-0", "1_000_000_000", "4611686018427387905", "1e-400", "10 ** 18", "0x10", "1__0"]
UNICODE = ["é", "λ", "𝔁", "\u200b", "\u2028", "\u2029", "\u00a0", "\ufeff", "\x00", "🙂", "\U0010ffff", "e\u0301",
           "\u202e", "\x85", "\x0b", "\x0c", "\x1c", "ｘ", "Ⅳ", "٣", "\t", "\r"]


HEAVY_NESTING = False       # the campaign sets this: 10,000 of every nesting form, not only brackets


def _tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def mutate(c: Chooser, text: str) -> bytes:
    """1 to 3 random mutations of a spec; the result is bytes (some mutations break UTF-8)."""
    data: str | bytes = text
    for _ in range(c.int(1, 3)):
        if isinstance(data, bytes):
            data = _mutate_bytes(c, data)
        else:
            data = _mutate_text(c, data)
    return data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")


def _mutate_bytes(c: Chooser, data: bytes) -> bytes:
    i = c.int(0, len(data))
    if c.chance(0.5):
        return data[:i] + c.bytes(c.int(1, 8)) + data[i:]
    return data[:i]


def _mutate_text(c: Chooser, text: str):
    toks = _tokens(text)
    real = [i for i, t in enumerate(toks) if not t.isspace()] or [0]
    if not toks:
        toks = [""]
    kind = c.int(0, 16)
    if kind == 0:                                   # delete a token
        del toks[c.choice(real)]
    elif kind == 1:                                 # duplicate a token
        i = c.choice(real)
        toks.insert(i, toks[i])
    elif kind == 2:                                 # swap two tokens
        i, j = c.choice(real), c.choice(real)
        toks[i], toks[j] = toks[j], toks[i]
    elif kind == 3:                                 # replace with a token from the vocabulary or the file
        toks[c.choice(real)] = c.choice(VOCAB) if c.chance(0.6) else toks[c.choice(real)]
    elif kind == 4:                                 # insert a token
        toks.insert(c.choice(real), c.choice(VOCAB) + c.choice(["", " "]))
    elif kind == 5:                                 # truncate
        return text[:c.int(0, len(text))]
    elif kind == 6:                                 # random bytes
        data = text.encode("utf-8")
        i = c.int(0, len(data))
        return data[:i] + c.bytes(c.int(1, 16)) + data[i:]
    elif kind == 7:                                 # a huge (or odd) number
        nums = [i for i, t in enumerate(toks) if t[:1].isdigit()] or real
        toks[c.choice(nums)] = c.choice(HUGE)
    elif kind == 8:                                 # deep nesting
        form = c.int(0, 7)
        i = c.choice(real)
        # brackets are refused before parsing, so 10,000 of them are cheap; 10,000 operators are
        # parsed first (a few seconds), so the bounded run keeps those to 1,000
        n = c.choice([50, 99, 100, 101, 150, 199, 200, 201, 300, 1000]
                     + ([10_000] if form in (0, 4) or HEAVY_NESTING else []))
        if form == 0:
            toks[i] = "(" * n + toks[i] + ")" * n
        elif form == 1:
            toks[i] = "-" * n + toks[i]
        elif form == 2:
            toks[i] = "not " * n + toks[i]
        elif form == 3:
            toks[i] = toks[i] + " -> ReLU" * n
        elif form == 4:
            toks[i] = "[" * n + toks[i] + "]" * n
        elif form == 5:
            toks[i] = "2 ** " * n + toks[i]
        elif form == 6:
            toks[i] = "1 if true else " * n + toks[i]
        else:
            toks[i] = toks[i] + "+1" * n
    elif kind == 9:                                 # unicode
        i = c.choice(real)
        u = c.choice(UNICODE)
        toks[i] = c.choice([u + toks[i], toks[i] + u, u])
    elif kind == 10:                                # CRLF / lone CR line ends
        return text.replace("\n", c.choice(["\r\n", "\r", "\n\r", "\u2028"]))
    elif kind == 11:                                # a byte-order mark
        return c.choice(["\ufeff" + text, "\ufeff\ufeff" + text, text + "\ufeff"])
    elif kind == 12:                                # mutate the numbers a little
        nums = [i for i, t in enumerate(toks) if t[:1].isdigit()] or real
        toks[c.choice(nums)] = c.choice(["0", "1", "-1", "3", "64", "1000", "0.5", "2.0", "65536"])
    elif kind == 13:                                # duplicate or delete a whole line
        lines = text.split("\n")
        i = c.int(0, len(lines) - 1)
        if c.chance(0.5):
            lines.insert(i, lines[i])
        else:
            del lines[i]
        return "\n".join(lines)
    elif kind == 14:                                # swap two lines
        lines = text.split("\n")
        i, j = c.int(0, len(lines) - 1), c.int(0, len(lines) - 1)
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    elif kind == 15:                                # a rename (keyword, unknown or unicode name)
        names = [i for i, t in enumerate(toks) if t[:1].isalpha()] or real
        toks[c.choice(names)] = c.choice(["model", "x2", "Linaer", "import", "N", "_", "λ", "out"])
    else:                                           # a long chain or a big repeat
        i = c.choice(real)
        toks[i] = toks[i] + c.choice([" -> repeat 10000 { ReLU }", " -> repeat 10000 { repeat 10000 { Identity } }",
                                      " -> Linear(100000000)", " -> " + " -> ".join(["ReLU"] * 500)])
    return "".join(toks)


# -- the oracle --------------------------------------------------------------------------------
@dataclass
class Finding:
    kind: str           # crash | hang | span | nospan
    summary: str        # one line: exception type and message, or what was wrong
    detail: str         # traceback or error text
    data: bytes         # the input

    def key(self) -> str:
        """What makes two findings the same bug: kind and the last frame of archdsl code."""
        frames = [ln for ln in self.detail.splitlines() if 'File "' in ln and "archdsl" in ln]
        where = frames[-1].strip() if frames else ""
        return f"{self.kind}: {self.summary.split(':')[0]} @ {where}"


class FuzzTimeout(BaseException):
    """Raised by SIGALRM: a BaseException, so no `except Exception` in archdsl swallows it."""


@contextlib.contextmanager
def time_limit(cpu_seconds: float, wall_seconds: float | None = None):
    """Raise FuzzTimeout after `cpu_seconds` of this process's CPU time (so a loaded machine does
    not turn a slow case into a false hang), or after `wall_seconds` of wall-clock time (default
    10x, for a case that blocks without using the CPU)."""
    def on_alarm(signum, frame):
        raise FuzzTimeout()
    old_prof = signal.signal(signal.SIGPROF, on_alarm)
    old_alrm = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    signal.setitimer(signal.ITIMER_REAL, wall_seconds or max(60.0, 10 * cpu_seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, old_prof)
        signal.signal(signal.SIGALRM, old_alrm)


@contextlib.contextmanager
def small_limits():
    """Lower the elaborator's expansion limits so a case that hits one does so in well under a
    second (the limits themselves are tested at full size in test_limits.py)."""
    from archdsl.elaborate import elaborator as E
    saved = E.MAX_NODES, E.MAX_EXPANSIONS
    E.MAX_NODES, E.MAX_EXPANSIONS = 3_000, 3_000
    try:
        yield
    finally:
        E.MAX_NODES, E.MAX_EXPANSIONS = saved


class Workdir:
    """A temporary folder holding a copy of specs/ (so imports resolve) and archdsl's stdlib."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="archdsl-fuzz-"))
        for f in spec_files():
            shutil.copy(f, self.path / f.name)

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


def warm_up() -> None:
    """Build the (cached) parser and op registry outside any time limit."""
    import archdsl
    archdsl.compile("model M { input x: f32[N, 2]  output y = x -> Linear(2) }")


MAX_LOWER_PARAMS = 50_000
MAX_LOWER_NODES = 150


def run_case(data: bytes, workdir: Path, *, seconds: float = 20.0, lower: bool = True,
             as_text: bool = False) -> tuple[str, Finding | None]:
    """Compile one input; returns (outcome, finding). outcome: ok, error, crash, hang."""
    import archdsl
    from archdsl.api import Spec
    from archdsl.elaborate.loader import load
    from archdsl.errors import ArchError

    path = workdir / "case.arch"
    path.write_bytes(data)
    stage = "compile"
    try:
        # NumPy's RuntimeWarnings (overflow in a cast, invalid values) count as crashes: a user
        # would see the warning, and behind it inf or NaN weights
        with time_limit(seconds), small_limits(), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            try:
                if as_text:
                    text = data.decode("utf-8", "replace")
                    spec = Spec(load(text=text))
                else:
                    spec = archdsl.compile(path)
                stage = "analyse"
                for m in spec.models():
                    _after_compile(m, lower)
            except ArchError as e:
                problem = span_problem(e, data if not as_text else None)
                if problem:
                    kind = "nospan" if "no span" in problem else "span"
                    return "error", Finding(kind, problem, e.format(), data)
                return "error", None
    except FuzzTimeout:
        return "hang", Finding("hang", f"no answer within {seconds:g}s of CPU time ({stage})",
                               traceback.format_exc(), data)
    except BaseException as e:     # noqa: BLE001 - anything else is a bug by definition
        if isinstance(e, KeyboardInterrupt):
            raise
        return "crash", Finding("crash", f"{type(e).__name__}: {str(e)[:200]}", traceback.format_exc(), data)
    return "ok", None


def _after_compile(m, lower: bool) -> None:
    from archdsl.passes.limits import check_resources
    m.cost(batch=2)
    check_resources(m, batch=2, limit_bytes=1 << 40)
    if lower and m.param_count <= MAX_LOWER_PARAMS and len(m.ir.nodes) <= MAX_LOWER_NODES:
        m.to_onnx(seed=0)


def span_problem(e, data: bytes | None) -> str | None:
    """What is wrong with an ArchError's location(s), or None. Every error from a spec has a span
    inside the file it names."""
    from archdsl.errors import ArchErrors
    errs = e.errors if isinstance(e, ArchErrors) else [e]
    e.format()      # must not raise
    for x in errs:
        s = x.span
        if s is None:
            return f"no span: {x.message[:150]}"
        source = s.source
        if source is None:
            try:
                source = Path(s.file).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeError):
                return f"span names an unreadable file {s.file!r}: {x.message[:100]}"
        lines = source.split("\n")
        if not 1 <= s.line <= len(lines):
            return f"line {s.line} outside 1..{len(lines)}: {x.message[:100]}"
        if not 1 <= s.col <= len(lines[s.line - 1]) + 1:
            return f"column {s.col} outside line {s.line} (length {len(lines[s.line - 1])}): {x.message[:100]}"
        if (s.end_line, s.end_col) < (s.line, s.col) or s.end_line > len(lines):
            return f"span end {s.end_line}:{s.end_col} before its start or past the file: {x.message[:100]}"
    return None


# == file-system and data-file attacks ===============================================================
# The front-end fuzzers feed spec text; these feed the commands hostile files and paths: outputs
# that are FIFOs, devices, links to an input, directories or empty; inputs that are FIFOs, links to
# system files, truncated, pickled or zip bombs; checkpoints whose metadata is valid JSON of the
# wrong types; run directories that hold a run, are locked or are files. A case runs one `archdsl`
# command in this process (archdsl.cli.main) inside a fresh folder, and the oracle checks more than
# the exit: no exception but an ArchError (exit 1) or a usage error (exit 2), no hang, no input
# changed, no FIFO, link or directory replaced, no temporary file left, no secret printed, and no
# file made or renamed outside the case's folder (a guard refuses it, so even a regression run as
# root cannot touch /dev).

FS_SPEC = "model Tiny {\n  input x: f32[N, 2]\n  output y = x -> Linear(3)\n}\n"
FS_NET = ("model Net {\n  input x: f32[N, 2]\n  output logits = x -> Linear(4) -> ReLU -> Linear(3)\n}\n\n"
          "train Net {\n  loss = cross_entropy(logits, label)\n  optimizer = SGD(lr=0.1)\n  batch = 8\n"
          "  epochs = 1\n}\n")
FS_MEMORY_LIMIT = "256M"        # ARCHDSL_MEMORY_LIMIT during a case: what a bomb may not reach
SECRET = "root:x:0:0"           # /etc/passwd's first line: never printed


@dataclass
class FileCase:
    argv: list[str]             # the archdsl command
    root: Path                  # the case's folder
    inputs: list[Path]          # files the command reads: they must not change
    what: str                   # a one-line description of the attack
    reader: int | None = None   # a FIFO reader's descriptor, drained after the command
    lock: int | None = None     # a run directory's descriptor held locked during the command

    def close(self) -> None:
        for fd in (self.reader, self.lock):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


_STAGED: dict[str, bytes] = {}


def staged_files() -> dict[str, bytes]:
    """A tiny spec, a trainable spec, data, an exported model, an input array and a training
    checkpoint (with metadata), made once per process."""
    if not _STAGED:
        import io

        import numpy as np
        import archdsl
        from archdsl.train import train
        d = Path(tempfile.mkdtemp(prefix="archdsl-fs-stage-"))
        try:
            (d / "net.arch").write_text(FS_NET)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((24, 2)).astype(np.float32)
            np.savez(d / "data.npz", x=x, label=(x[:, 0] > 0).astype(np.int64))
            train(archdsl.compile(d / "net.arch").model(), d / "data.npz", run_dir=d / "run", quiet=True,
                  log=lambda s: None)
            buf = io.BytesIO()
            np.save(buf, x[:3])
            _STAGED.update({"tiny.arch": FS_SPEC.encode(), "net.arch": FS_NET.encode(),
                            "data.npz": (d / "data.npz").read_bytes(), "x.npy": buf.getvalue(),
                            "ck.npz": (d / "run" / "checkpoint.npz").read_bytes(),
                            "m.onnx": archdsl.compile(FS_SPEC).model().to_onnx(seed=0).SerializeToString()})
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return _STAGED


def _npy_bytes(c: Chooser) -> bytes:
    """An .npy member, often lying about its shape or dtype."""
    import io

    import numpy as np
    header = {"descr": c.choice(["<f4", "<f8", "<i8", "|b1", "<U4", "|O", ">f8", "<c16", "|V8", "<f2"]),
              "fortran_order": c.chance(0.1),
              "shape": c.choice([(24, 2), (24,), (), (0, 2), (10 ** 12, 64), (2 ** 62,), (-1, 2), (24, 2, 1),
                                 (1 << 26,), (3, 10 ** 9)])}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except (ValueError, TypeError):
        buf = io.BytesIO(b"\x93NUMPY\x01\x00" + b"v\x00{'descr': '<f4', 'shape': (1,)}")
    body = c.choice([b"", bytes(64), bytes(24 * 2 * 8), c.bytes(c.int(1, 200))])
    return buf.getvalue() + body


def _hostile_npz(c: Chooser, path: Path, good: bytes) -> str:
    """Write a hostile .npz (or something posing as one) at `path`; returns what it is."""
    import zipfile
    kind = c.int(0, 9)
    if kind == 0:
        path.write_bytes(good[:c.int(0, len(good))])
        return "a truncated archive"
    if kind == 1:
        path.write_bytes(c.bytes(c.int(0, 300)))
        return "random bytes"
    if kind == 2:
        path.write_text(c.choice(["these are my notes\n", "{\"x\": [1, 2]}", "", "\u00e9t\u00e9\n" * 40]))
        return "a text file"
    if kind == 3:
        path.write_bytes(b"\x80\x04\x95" + c.bytes(40))
        return "a pickle"
    if kind == 4:
        data = bytearray(good)
        for _ in range(c.int(1, 8)):
            i = c.int(0, len(data) - 1)
            data[i] = c.int(0, 255)
        path.write_bytes(bytes(data))
        return "an archive with flipped bytes"
    if kind == 5:                       # a zip bomb: a member that inflates past the limit
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            with z.open("x.npy", "w", force_zip64=True) as m:
                import numpy as np
                np.lib.format.write_array_header_1_0(m, {"descr": "<f8", "fortran_order": False,
                                                         "shape": (c.choice([1 << 25, 1 << 26]),)})
                zeros = bytes(1 << 20)
                for _ in range(c.choice([8, 300])):
                    m.write(zeros)
        return "a zip bomb"
    if kind == 6:
        path.write_bytes(_npy_bytes(c))
        return "an .npy with a lying header"
    with zipfile.ZipFile(path, "w", c.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as z, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")             # duplicate member names are part of the attack
        for i in range(c.int(0, 3)):
            name = c.choice(["x.npy", "label.npy", "x", "dir/", "../x.npy", "__meta__.npy", "x.npy"])
            if name.endswith("/"):
                z.writestr(name, b"")
            else:
                z.writestr(name, _npy_bytes(c) if c.chance(0.8) else c.bytes(c.int(0, 64)))
    return "an archive of lying members"


def _hostile_checkpoint(c: Chooser, path: Path, good: bytes) -> str:
    """The staged checkpoint with its metadata or arrays damaged."""
    import io
    import json as _json

    import numpy as np
    with np.errstate(invalid="ignore"):
        return _damage_checkpoint(c, path, dict(np.load(io.BytesIO(good))))


def _damage_checkpoint(c: Chooser, path: Path, arrays: dict) -> str:
    import json as _json

    import numpy as np
    meta = _json.loads(arrays["__meta__"].tobytes())
    values = [None, True, -1, 0, 2 ** 70, 1.5, float("nan"), "x", "", [], [1, "a"], {}, {"state": None}]
    what = []
    for _ in range(c.int(1, 3)):
        r = c.int(0, 9)
        if r < 6:                                   # one field, top-level or one level down
            d, key = meta, c.choice(sorted(meta))
            if isinstance(d[key], dict) and d[key] and c.chance(0.5):
                d, key = d[key], c.choice(sorted(d[key]))
            if c.chance(0.2):
                del d[key]
                what.append(f"no {key}")
            else:
                d[key] = c.choice(values)
                what.append(f"{key}={d[key]!r}")
        elif r < 8:                                 # an array
            name = c.choice(sorted(k for k in arrays if k != "__meta__"))
            arrays[name] = c.choice([np.zeros((0,), np.float32), np.full(arrays[name].shape, np.nan, np.float32),
                                     arrays[name].astype(np.int64), np.zeros((3, 3), np.float32)])
            what.append(f"array {name} replaced")
        else:
            arrays.pop(c.choice(sorted(arrays)))
            what.append("an array missing")
    raw = _json.dumps(meta).encode() if c.chance(0.9) else c.bytes(c.int(0, 40))
    arrays["__meta__"] = np.frombuffer(raw, np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return "a checkpoint with " + ", ".join(what)


def _hostile_path(c: Chooser, root: Path, inputs: dict[str, Path], suffix: str) -> tuple[str, str, int | None]:
    """An output path (and what it is, and a FIFO reader to drain or None)."""
    kind = c.int(0, 15)
    p = root / f"out{suffix}"
    if kind == 0:
        os.mkfifo(p)
        return str(p), "a FIFO with a reader", os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    if kind == 1:
        os.mkfifo(p)
        return str(p), "a FIFO without a reader", None
    if kind == 2:
        target = c.choice(sorted(inputs.values()))
        p.symlink_to(target)
        return str(p), f"a link to the input {target.name}", None
    if kind == 3:
        target = c.choice(sorted(inputs.values()))
        os.link(target, p)
        return str(p), f"a hard link to the input {target.name}", None
    if kind == 4:
        dev = c.choice(["/dev/null", "/dev/full", "/dev/zero"])
        p.symlink_to(dev)
        return str(p), f"a link to {dev}", None
    if kind == 5:
        p.symlink_to(root / "nowhere" / f"x{suffix}")
        return str(p), "a dangling link", None
    if kind == 6:
        p.symlink_to(p)
        return str(p), "a link to itself", None
    if kind == 7:
        p.mkdir()
        return str(p), "a directory", None
    if kind == 8:
        return str(p) + "/", "a trailing slash", None
    if kind == 9:
        return "", "an empty path", None
    if kind == 10:
        return str(c.choice(sorted(inputs.values()))) + f"/x{suffix}", "a path through a file", None
    if kind == 11:
        return str(root / "no" / "such" / f"dir{suffix}"), "a missing directory", None
    if kind == 12:
        return str(root / ("x" * 300 + suffix)), "a name too long", None
    if kind == 13:
        p.write_bytes(b"old")
        p.chmod(0o444)
        return str(p), "a read-only file", None
    if kind == 14:
        return str(c.choice(sorted(inputs.values()))), "the input itself", None
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / f"link{suffix}").symlink_to(f"../out{suffix}")
    return str(root / "sub" / f"link{suffix}"), "a relative link", None


def _hostile_input(c: Chooser, root: Path, name: str, good: bytes) -> tuple[Path, str]:
    """An input file named `name` that is not what it should be."""
    p = root / f"hostile-{name}"
    kind = c.int(0, 6)
    if kind == 0:
        os.mkfifo(p)
        return p, "a FIFO"
    if kind == 1:
        p.symlink_to(c.choice(["/etc/passwd", "/dev/zero", "/dev/null", "/proc/self/environ", str(root)]))
        return p, f"a link to {os.readlink(p)}"
    if kind == 2:
        p.mkdir()
        return p, "a directory"
    if kind == 3:
        p.symlink_to(p)
        return p, "a link loop"
    if kind == 4:
        p.write_bytes(good[:c.int(0, len(good))])
        return p, "a truncated copy"
    if kind == 5:
        return root / f"missing-{name}", "a missing file"
    p.write_bytes(c.bytes(c.int(0, 100)))
    return p, "random bytes"


def _read_by(argv: list[str], files) -> list[Path]:
    """The files the command `argv` reads: those named by an argument other than its output."""
    args = [a for i, a in enumerate(argv) if not (i and argv[i - 1] in ("-o", "--output"))]
    return [p for p in files if any(a == str(p) or a.endswith("=" + str(p)) for a in args)]


def file_case(c: Chooser, root: Path) -> FileCase:
    """One hostile setup in the empty folder `root` and the command that meets it."""
    case = _file_case(c, root)
    case.inputs = _read_by(case.argv, case.inputs)
    return case


def _file_case(c: Chooser, root: Path) -> FileCase:
    staged = staged_files()
    files = {}
    for name, data in staged.items():
        (root / name).write_bytes(data)
        files[name] = root / name
    inputs = dict(files)
    kind = c.choice(["output", "output", "output", "data", "checkpoint", "spec", "input", "rundir", "rundir"])
    reader = lock = None
    if kind == "output":
        command = c.choice(["export", "export", "render", "run", "report", "fmt-link"])
        if command == "fmt-link":
            (root / "unformatted.arch").write_text("model   M{input x:f32[N,2]\noutput y=x->ReLU}\n")
            (root / "link.arch").symlink_to("unformatted.arch")
            return FileCase(["fmt", str(root / "link.arch")], root, [], "fmt on a symlink")
        suffix = {"export": ".onnx", "render": ".dot", "run": ".npz", "report": ".html"}[command]
        out, what, reader = _hostile_path(c, root, files, suffix)
        if command == "run":
            argv = ["run", str(files["m.onnx"]), "--input", f"x={files['x.npy']}", "-o", out]
        else:
            argv = [command, str(files["tiny.arch"]), "-o", out]
        if command == "export" and c.chance(0.3):
            argv += ["--weights", str(files["ck.npz"])]
            argv[1] = str(files["net.arch"])
        return FileCase(argv, root, list(inputs.values()), f"{command} -o {what}", reader=reader)
    if kind == "data":
        what = _hostile_npz(c, root / "evil.npz", staged["data.npz"])
        evil = root / "evil.npz"
        argv = c.choice([["train", str(files["net.arch"]), "--data", str(evil), "-o", str(root / "run")],
                         ["train", str(files["net.arch"]), "--data", str(files["data.npz"]), "--init", str(evil),
                          "-o", str(root / "run")],
                         ["export", str(files["net.arch"]), "--weights", str(evil), "-o", str(root / "w.onnx")],
                         ["run", str(files["m.onnx"]), "--input", f"x={evil}", "-o", str(root / "o.npz")]])
        return FileCase(argv, root, list(inputs.values()) + [evil], f"{argv[0]} reading {what}")
    if kind == "checkpoint":
        what = _hostile_checkpoint(c, root / "bad.npz", staged["ck.npz"])
        bad = root / "bad.npz"
        argv = c.choice([["train", str(files["net.arch"]), "--resume", str(bad), "--data", str(files["data.npz"]),
                          "-o", str(root / "run2"), "--epochs", "2"],
                         ["export", str(files["net.arch"]), "--weights", str(bad), "-o", str(root / "w.onnx")],
                         ["train", str(files["net.arch"]), "--init", str(bad), "--data", str(files["data.npz"]),
                          "-o", str(root / "run3")]])
        return FileCase(argv, root, list(inputs.values()) + [bad], f"{argv[0]} with {what}")
    if kind == "spec":
        spec, what = _hostile_input(c, root, "spec.arch", staged["tiny.arch"])
        command = c.choice(["check", "show", "fmt", "summary", "export", "render"])
        argv = [command, str(spec)] + ({"export": ["-o", str(root / "s.onnx")], "render": ["-o", str(root / "s.dot")]}
                                       .get(command, []))
        return FileCase(argv, root, list(inputs.values()), f"{command} of a spec that is {what}")
    if kind == "input":
        name = c.choice(["x.npy", "m.onnx", "ck.npz"])
        bad, what = _hostile_input(c, root, name, staged[name])
        argv = {"x.npy": ["run", str(files["m.onnx"]), "--input", f"x={bad}"],
                "m.onnx": ["run", str(bad), "--input", f"x={files['x.npy']}"],
                "ck.npz": ["export", str(files["net.arch"]), "--weights", str(bad), "-o", str(root / "w.onnx")]}[name]
        return FileCase(argv, root, list(inputs.values()), f"{argv[0]} with a {name} that is {what}")
    # a run directory
    run = root / "run"
    setup = c.int(0, 6)
    if setup == 0:
        run.mkdir()
        (run / "checkpoint.npz").write_bytes(staged["ck.npz"])
        (run / "best.npz").write_bytes(staged["ck.npz"])
        what = "holding a run"
    elif setup == 1:
        run.write_bytes(b"not a directory")
        what = "a file"
    elif setup == 2:
        run.mkdir()
        lock = os.open(run, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        what = "locked by another run"
    elif setup == 3:
        (root / "real-run").mkdir()
        (root / "real-run" / "notes.txt").write_text("mine")
        run.symlink_to("real-run")
        what = "a link to a directory with a file"
    elif setup == 4:
        run.mkdir()
        os.replace(files["data.npz"], run / "best.npz")
        files["data.npz"] = inputs["data.npz"] = run / "best.npz"
        what = "holding the data as best.npz"
    elif setup == 5:
        run.mkdir()
        os.mkfifo(run / "metrics.jsonl")
        what = "with a FIFO as metrics.jsonl"
    else:
        what = "new"
    argv = ["train", str(files["net.arch"]), "--data", str(files["data.npz"]), "-o", str(run), "--quiet"]
    if c.chance(0.4):
        argv.append("--overwrite")
    if c.chance(0.3):
        argv += ["--resume", str(files["ck.npz"] if c.chance(0.5) else run)]
    return FileCase(argv, root, [p for n, p in inputs.items() if n != "ck.npz" or "--resume" not in argv],
                    f"train into a run directory {what}" + (" (--overwrite)" if "--overwrite" in argv else ""),
                    lock=lock)


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its kind, and a link's target or a file's digest."""
    import hashlib
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[p] = ("file", hashlib.sha1(f.read()).hexdigest())
            else:
                out[p] = (stat.S_IFMT(st.st_mode),)
    return out


@contextlib.contextmanager
def _jail(root: Path):
    """archdsl may make, rename and remove files only under `root` (and make its own temporary
    files, for the bytes it writes through a pipe or device, in the system's temporary folder):
    anything else raises, before it happens."""
    allowed = str(root.resolve()) + os.sep
    real_mkstemp, real_replace, real_unlink = tempfile.mkstemp, os.replace, os.unlink

    def inside(path) -> bool:
        p = os.path.realpath(os.path.dirname(os.path.abspath(os.fspath(path))))
        return (p + os.sep).startswith(allowed)

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and not inside(os.path.join(os.fspath(dir), "x")):
            raise JailBreak(f"a temporary file in {dir}")
        return real_mkstemp(*a, dir=dir, **kw)

    def replace(src, dst, *a, **kw):
        if not inside(dst):
            raise JailBreak(f"a rename onto {dst}")
        return real_replace(src, dst, *a, **kw)

    def unlink(path, *a, **kw):
        ours = os.path.basename(os.fspath(path)).startswith((".archdsl.", "tmp"))
        if not inside(path) and not ours:
            raise JailBreak(f"removing {path}")
        return real_unlink(path, *a, **kw)
    tempfile.mkstemp, os.replace, os.unlink = mkstemp, replace, unlink
    try:
        yield
    finally:
        tempfile.mkstemp, os.replace, os.unlink = real_mkstemp, real_replace, real_unlink


class JailBreak(BaseException):
    """archdsl tried to write outside the case's folder (not an Exception: nothing may catch it)."""


@contextlib.contextmanager
def _quiet_fds():
    """The command's output (its stdout may be a FIFO's or a device's, its stderr the errors) into
    temporary files instead of the campaign's terminal; yields a function reading both back."""
    import io
    saved = [os.dup(1), os.dup(2)]
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    out, err = io.StringIO(), io.StringIO()
    old_streams = sys.stdout, sys.stderr
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout, sys.stderr = out, err

        def read() -> str:
            text = out.getvalue() + err.getvalue()
            for f in files:
                f.seek(0)
                text += f.read().decode("utf-8", "replace")
            return text
        yield read
    finally:
        sys.stdout, sys.stderr = old_streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for f in files:
            f.close()


def run_file_case(case: FileCase, *, seconds: float = 30.0) -> tuple[str, Finding | None]:
    """Run the command of `case`; (outcome, finding). outcome: ok (exit 0), error (1, an
    ArchError), usage (2, argparse), crash, hang, destroyed (an invariant broken)."""
    from archdsl.cli import main
    before = _snapshot(case.root)
    data = f"{case.what}\n$ archdsl {' '.join(case.argv)}".encode()
    old_env = os.environ.get("ARCHDSL_MEMORY_LIMIT")
    os.environ["ARCHDSL_MEMORY_LIMIT"] = FS_MEMORY_LIMIT
    rc, text = None, ""
    try:
        with _quiet_fds() as output, time_limit(seconds, seconds * 2), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with _jail(case.root):
                    rc = main(case.argv)
            except SystemExit as e:
                rc = e.code
            finally:
                text = output()
    except FuzzTimeout:
        return "hang", Finding("hang", f"no answer within {seconds:g}s: {case.what}", traceback.format_exc(), data)
    except BaseException as e:       # noqa: BLE001 - anything else is a bug by definition
        if isinstance(e, KeyboardInterrupt):
            raise
        kind = "jailbreak" if isinstance(e, JailBreak) else "crash"
        return "crash", Finding(kind, f"{type(e).__name__}: {str(e)[:160]} ({case.what})", traceback.format_exc(),
                                data)
    finally:
        if old_env is None:
            os.environ.pop("ARCHDSL_MEMORY_LIMIT", None)
        else:
            os.environ["ARCHDSL_MEMORY_LIMIT"] = old_env
        if case.reader is not None:
            with contextlib.suppress(OSError):
                while os.read(case.reader, 1 << 16):
                    pass
        case.close()
    problems = []
    if rc not in (0, 1, 2):
        problems.append(f"exit status {rc!r}")
    if "Traceback (most recent call last)" in text:
        problems.append("a traceback was printed")
    if SECRET in text:
        problems.append("the contents of /etc/passwd were printed")
    after = _snapshot(case.root)
    for p in case.inputs:
        if str(p) in before and after.get(str(p)) != before[str(p)]:
            problems.append(f"the input {p.name} was changed")
    for p, kind in before.items():
        if kind[0] != "file" and after.get(p, (None,))[0] != kind[0]:
            problems.append(f"{os.path.relpath(p, case.root)} ({'a link' if kind[0] == 'link' else 'not a file'}) "
                            f"was replaced")
    left = [p for p in after if ".tmp" in os.path.basename(p) or ".write-test." in os.path.basename(p)]
    if left:
        problems.append(f"temporary files left: {', '.join(os.path.relpath(p, case.root) for p in left)}")
    if problems:
        return "destroyed", Finding("destroyed", f"{'; '.join(problems)} ({case.what})", text[-3000:], data)
    return {0: "ok", 1: "error", 2: "usage"}[rc], None


def seeded_file_case(seed: int, root: Path) -> FileCase:
    """The file case drawn from `seed` (the campaign saves the seed of each finding for --replay)."""
    import random
    return file_case(Chooser(rnd=random.Random(seed)), root)
