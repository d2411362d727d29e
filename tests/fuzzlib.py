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
import re
import shutil
import signal
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
