"""Run an exported ONNX model on ONNX Runtime, with the same care for errors as the compiler.

    sess = Session("lenet.onnx", device="auto")      # "auto" | "cpu" | "cuda"
    sess.device, sess.providers                      # what was actually used
    sess.inputs                                      # [IOInfo(name, dtype, shape)], dims int | str | None
    out = sess.run({"image": x})                     # {output name: np.ndarray}

Every mistake a user can make (a missing or corrupt file, a misspelt input name, the
wrong dtype, a shape that does not fit, asking for CUDA where there is none) is an
ArchError raised *before* ONNX Runtime is asked to do anything, so the CLI prints a
diagnostic instead of a C++ stack trace. That includes the shape constraints an archdsl
export records in its metadata (a U-Net needs H to be a multiple of 16: ir/constraints.py),
checked against the sizes of the inputs; ONNX Runtime's own log lines are never printed.

Device selection. ONNX Runtime silently falls back to the CPU when the CUDA provider
is compiled in but its libraries (CUDA, cuDNN) cannot be loaded; `get_available_providers()`
still lists CUDA in that case. So "cuda" checks `session.get_providers()` after creating
the session and refuses to go on if CUDA is not really there; "auto" records what it got
in `device` and, when it wanted CUDA and did not get it, why (`fallback_reason`).

Precision (`precision=`, what the GPU may do): "fp32" (the default) runs float32 models in full
float32, TF32 off (the CUDA provider's use_tf32=0), where archdsl promises agreement with the
NumPy engine within 1e-4; "tf32" lets the CUDA provider's matrix products use TF32 (faster on
Ampere and later GPUs, about 1e-3 relative error); "fp16" converts a float32 model to float16 on
load (backends/onnx/precision.py: float32 inputs and outputs, weights and compute in float16;
a model already in half precision runs as it is). On the CPU provider fp32 and tf32 are alike.
`cpu_fallback=False` (device "cuda") makes ONNX Runtime refuse a model any of whose nodes would
run on the CPU (session.disable_cpu_ep_fallback).

Keeping data on the device. `run(feeds, on_device=True)` returns ONNX Runtime OrtValues that
stay in the session's device memory (IOBinding), and any feed may be such an OrtValue (an
output of this or another session on the same device, or `to_device(array)`): a serving loop
or a sampler passes state from step to step without copies through the host, and copies back
only what it needs (`value.numpy()`).

Dtypes. One rule for floats and integers alike: a feed whose dtype is of the same kind as the
input's (a float for a float input, an integer for an integer input) is cast to the input's
dtype when every value fits in it: float64 -> float32 (values within float32's range; they are
rounded to float32, as the model computes in float32 anyway), int64 -> int32 (values within
int32's range), int -> uint (no negative value), and every widening. A value that does not fit
(1e300 into float32, 2**40 into int32, -1 into uint8) is an error that names it, and so is a
cast across kinds (ints into a float input, floats into an integer input, bools into numbers).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnxruntime as ort

from archdsl.errors import ArchError, did_you_mean, raise_errors
from archdsl.installed import ort_package
from archdsl.ir.constraints import METADATA_KEY, explain, loads, violated

__all__ = ["Session", "IOInfo", "load_inputs", "format_shape", "GPU_HINT", "PRECISIONS"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "fp16")

GPU_HINT = (
    "install the GPU build of ONNX Runtime in place of the CPU one: `make gpu` "
    "(or `pip uninstall -y onnxruntime && pip install onnxruntime-gpu`; both packages provide the "
    "same `onnxruntime` module, so only one may be installed), then check with `archdsl doctor`"
)
CUDA_LIBS_HINT = (
    "onnxruntime-gpu needs matching CUDA and cuDNN libraries on the library path "
    "(e.g. `pip install 'onnxruntime-gpu[cuda,cudnn]'`, or the system CUDA toolkit) and a visible GPU; "
    "run `archdsl doctor` for details, or use device='cpu'"
)

# ONNX Runtime's type strings -> NumPy dtypes. bfloat16 and the float8 types have no NumPy dtype.
_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}

def format_shape(shape) -> str:
    """[N, 3, 28, 28]; an unnamed dynamic dim prints as '?', an unknown rank as '[...]'."""
    if shape is None:
        return "[...]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _got_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class IOInfo:
    """One model input or output. dtype is a numpy dtype (None when NumPy has none, e.g. bfloat16);
    shape is a tuple of int (static), str (symbolic, e.g. "N") or None (unnamed dynamic), or
    None when the rank itself is unknown."""
    name: str
    dtype: np.dtype | None
    shape: tuple | None
    type: str  # ONNX Runtime's own type string, e.g. "tensor(float)"

    @property
    def type_str(self) -> str:
        dt = self.dtype.name if self.dtype is not None else self.type
        return f"{dt}{format_shape(self.shape)}"

    def __str__(self) -> str:
        return f"{self.name}: {self.type_str}"


def _io_info(arg, rank_known: bool = True) -> IOInfo:
    np_t = _ORT_DTYPES.get(arg.type)
    shape = arg.shape
    if shape is None or (not shape and not rank_known):
        shp = None
    else:
        shp = tuple(d if isinstance(d, (int, str)) or d is None else None for d in shape)
        shp = tuple(None if isinstance(d, str) and not d else d for d in shp)
    return IOInfo(arg.name, np.dtype(np_t) if np_t is not None else None, shp, arg.type)


def _first_line(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Failed to load model ..." -> the useful part
    if msg.startswith("[ONNXRuntimeError]"):
        parts = msg.split(" : ", 3)
        if len(parts) == 4:
            msg = parts[3]
    msg = msg.splitlines()[0] if msg else msg
    # "/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) Unsupported model IR version"
    m = re.search(r"\S*\.(?:cc|cpp|h):\d+ ", msg)
    if m:
        rest = msg[m.end():]
        f = re.match(r"[\w:~<>]+\(", rest)
        if f:
            depth = 0
            for i in range(f.end() - 1, len(rest)):
                depth += {"(": 1, ")": -1}.get(rest[i], 0)
                if depth == 0:
                    rest = rest[i + 1:].lstrip()
                    break
        msg = rest or msg
    return msg


class Session:
    """An ONNX Runtime session on a chosen device, with checked inputs.

    path_or_bytes: a path to a .onnx file, the serialized model bytes, or an onnx.ModelProto.
    device: "auto" (CUDA if it really works, else CPU), "cpu", or "cuda" (error if CUDA is unusable).
    options: an optional onnxruntime.SessionOptions.

    After construction: `device` is "cuda" or "cpu", `providers` the providers ONNX Runtime
    reports, `fallback_reason` why "auto" ended on the CPU although CUDA was listed (else None),
    `inputs` / `outputs` lists of IOInfo, `name` the file name (or "<bytes>").
    """

    def __init__(self, path_or_bytes, device: str = "auto", options: "ort.SessionOptions | None" = None,
                 precision: str = "fp32", cpu_fallback: bool = True):
        if device not in DEVICES:
            raise ArchError(f"unknown device '{device}'", hint=did_you_mean(str(device), DEVICES)
                            or "choose one of: auto, cpu, cuda")
        if precision not in PRECISIONS:
            raise ArchError(f"unknown precision '{precision}'", hint=did_you_mean(str(precision), PRECISIONS)
                            or "choose one of: fp32, tf32, fp16")
        if not cpu_fallback and device != "cuda":
            raise ArchError("cpu_fallback=False forbids CPU nodes in a CUDA session; it needs device 'cuda'")
        self.requested_device = device
        self.precision = precision
        self.cpu_fallback = cpu_fallback
        self.name, self._model = self._read(path_or_bytes)
        if precision == "fp16":
            self._model = self._half(self._model)
        self._options = options
        self.fallback_reason: str | None = None

        available = list(ort.get_available_providers())
        if device == "cpu":
            sess = self._create([CPU])
        elif device == "cuda":
            if CUDA not in available:
                raise ArchError(
                    f"device 'cuda' requested but this ONNX Runtime ({ort_package()}) has no "
                    f"CUDAExecutionProvider (available: {', '.join(available) or 'none'})",
                    hint=GPU_HINT)
            try:
                sess = self._create([CUDA, CPU] if cpu_fallback else [CUDA])
            except ArchError:
                raise
            except Exception as e:  # CUDA initialisation can throw; tell that apart from a bad model
                self._create([CPU])  # raises the loading error if the model itself is the problem
                if not cpu_fallback and "fallback" in str(e).lower():
                    raise ArchError(f"{self.name} has nodes ONNX Runtime would run on the CPU, and CPU "
                                    f"fallback is disabled: {_first_line(e)}",
                                    hint="export with `archdsl export --target cuda` (an opset and lowerings "
                                         "the CUDA provider runs), or allow the fallback") from None
                raise ArchError(f"device 'cuda' requested but ONNX Runtime could not start CUDA "
                                f"for {self.name}: {_first_line(e)}", hint=CUDA_LIBS_HINT) from None
            if CUDA not in sess.get_providers():
                raise ArchError(
                    "device 'cuda' requested but ONNX Runtime fell back to the CPU "
                    f"(session providers: {', '.join(sess.get_providers())}); the CUDA provider is "
                    "installed but could not be loaded", hint=CUDA_LIBS_HINT)
        else:  # auto
            sess = None
            if CUDA in available:
                try:
                    sess = self._create([CUDA, CPU])
                except Exception as e:
                    self.fallback_reason = f"CUDA could not be started: {_first_line(e)}"
                    sess = None
                if sess is not None and CUDA not in sess.get_providers():
                    self.fallback_reason = ("CUDAExecutionProvider is installed but ONNX Runtime fell back "
                                            "to the CPU (CUDA/cuDNN libraries missing or no GPU visible)")
            if sess is None:
                sess = self._create([CPU])
        self._sess = sess
        self.providers: list[str] = list(sess.get_providers())
        self.device = "cuda" if CUDA in self.providers else "cpu"

        ins = sess.get_inputs()
        # ORT reports both a scalar and an input of unknown rank as shape []; ask the model which.
        unknown = self._unknown_rank_inputs() if any(not a.shape for a in ins) else set()
        self.inputs: list[IOInfo] = [_io_info(a, a.name not in unknown) for a in ins]
        self.outputs: list[IOInfo] = [_io_info(a) for a in sess.get_outputs()]
        self._in = {i.name: i for i in self.inputs}
        meta = sess.get_modelmeta()
        # what an archdsl export says the input sizes must satisfy (none for other files)
        self.constraints = loads(meta.custom_metadata_map.get(METADATA_KEY, "[]"))
        self.model_name = meta.custom_metadata_map.get("model") or meta.graph_name or self.name

    # -- loading ---------------------------------------------------------------------------------

    @staticmethod
    def _read(src):
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            if not data:
                raise ArchError("cannot load model from <bytes>: the data is empty")
            return "<bytes>", data
        if hasattr(src, "SerializeToString"):  # onnx.ModelProto
            return "<model>", src.SerializeToString()
        if not isinstance(src, (str, os.PathLike)):
            raise ArchError(f"cannot load a model from a {type(src).__name__}; "
                            "give a path to a .onnx file, its bytes, or an onnx.ModelProto")
        path = os.fspath(src)
        if not os.path.exists(path):
            raise ArchError(f"cannot load model '{path}': no such file",
                            hint="export one with `archdsl export SPEC.arch -o MODEL.onnx`")
        if os.path.isdir(path):
            raise ArchError(f"cannot load model '{path}': it is a directory, not an .onnx file")
        from .fileio import check_input
        check_input(path, "model")              # ONNX Runtime would block forever on a FIFO
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise ArchError(f"cannot load model '{path}': {e.strerror or e}") from None
        if size == 0:
            raise ArchError(f"cannot load model '{path}': the file is empty")
        return path, path  # ORT reads paths itself (and finds external data beside the file)

    def _create(self, providers):
        options = [self._provider_options(p) for p in providers]
        try:
            return ort.InferenceSession(self._model, sess_options=self._session_options(providers),
                                        providers=providers, provider_options=options)
        except Exception as e:
            if providers[0] != CPU:
                raise  # the caller tells a CUDA failure from a bad model
            raise self._load_error(e) from None

    def _provider_options(self, provider: str) -> dict:
        if provider == CUDA:        # fp32 means float32 matrix products: TF32 only when asked for
            return {"use_tf32": "1" if self.precision == "tf32" else "0"}
        return {}

    def _session_options(self, providers):
        so = self._options or self._default_options()
        if not self.cpu_fallback and CUDA in providers:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so

    @staticmethod
    def _default_options():
        so = ort.SessionOptions()
        # fatal only: ONNX Runtime's own (coloured) error lines would repeat, before ours, what
        # the ArchError says; CUDA fallbacks are reported by us
        so.log_severity_level = 4
        return so

    def _half(self, model):
        """The model in float16 (unless it is in half precision already): precision.to_half."""
        import onnx

        from .backends.onnx.precision import to_half
        try:
            proto = onnx.load_model_from_string(model) if isinstance(model, bytes) else onnx.load(model)
        except Exception as e:
            raise self._load_error(e) from None
        half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
        if any(t.data_type in half for t in proto.graph.initializer):
            return model
        return to_half(proto, "fp16").SerializeToString()

    def _load_error(self, e: Exception) -> ArchError:
        msg = _first_line(e)
        low = msg.lower()
        hint = None
        if "protobuf parsing failed" in low or "no graph was found" in low:
            msg = "not an ONNX model, or the file is truncated or corrupt"
            hint = "re-export it with `archdsl export`"
        elif "ir version" in low:
            hint = ("this ONNX Runtime is older than the ONNX file; upgrade onnxruntime "
                    "or export with a lower IR version")
        elif "opset" in low:
            hint = "upgrade onnxruntime, or export with a lower opset (`archdsl export --opset N`)"
        elif isinstance(e, OSError) or "no_suchfile" in str(e).lower():
            hint = "check the path and its permissions"
        return ArchError(f"cannot load model '{self.name}': {msg}", hint=hint)

    def _unknown_rank_inputs(self) -> set[str]:
        try:
            import onnx
            if isinstance(self._model, bytes):
                m = onnx.load_model_from_string(self._model)
            else:
                m = onnx.load(self._model, load_external_data=False)
        except Exception:
            return set()
        return {v.name for v in m.graph.input
                if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")}

    # -- running ---------------------------------------------------------------------------------

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"<Session {self.name} on {self.device} ({self.precision}): ({ins}) -> ({outs})>"

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def check(self, feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate feeds against the model's inputs and return them as arrays ready to run
        (cast where that is safe). Raises ArchError (ArchErrors when several problems)."""
        if not isinstance(feeds, Mapping):
            raise ArchError(f"inputs must be a dict of input name -> array, got {type(feeds).__name__}",
                            hint=f"e.g. {{{', '.join(repr(n) + ': ...' for n in self.input_names)}}}")
        errors: list[ArchError] = []
        out: dict[str, np.ndarray] = {}
        for name in feeds:
            if name not in self._in:
                expected = ", ".join(self.input_names) or "none"
                hint = did_you_mean(str(name), self.input_names)
                errors.append(ArchError(f"unknown input '{name}' (the model's inputs: {expected})", hint=hint))
        for info in self.inputs:
            if info.name not in feeds:
                errors.append(ArchError(f"missing input '{info.name}': {info.type_str}",
                                        hint="every model input must be given"))
        dims: dict[str, tuple[int, str, tuple]] = {}  # symbol -> (value, input, shape)
        for info in self.inputs:
            if info.name not in feeds:
                continue
            try:
                arr = self._convert(info, feeds[info.name])
            except ArchError as e:
                errors.append(e)
                continue
            err = self._check_shape(info, tuple(arr.shape()) if isinstance(arr, ort.OrtValue) else arr.shape, dims)
            if err is not None:
                errors.append(err)
                continue
            out[info.name] = arr
        if not errors:
            errors += self._check_constraints(dims)
        raise_errors(errors)
        return out

    def _check_constraints(self, dims: dict) -> list[ArchError]:
        """The recorded shape constraints at these sizes: one error per set of symbols."""
        bindings = {k: v[0] for k, v in dims.items()}
        errors, seen = [], set()
        for c in violated(self.constraints, bindings):
            syms = tuple(c.symbols())
            if syms in seen:
                continue
            seen.add(syms)
            message, hint = explain(c, self.constraints, bindings)
            _, name, shape = dims[syms[0]]
            errors.append(ArchError(f"input '{name}' (shape {_got_shape(shape)}) does not fit model "
                                    f"{self.model_name}: {message}", hint=hint))
        return errors

    def run(self, feeds: Mapping[str, object], outputs: list[str] | None = None, *,
            on_device: bool = False) -> dict:
        """Run the model. feeds: input name -> array (or an OrtValue on this session's device).
        outputs: names to compute (default: all). Returns output name -> np.ndarray, or with
        on_device=True -> OrtValue left in the device's memory (module docstring)."""
        arrays = self.check(feeds)
        names = list(self.output_names if outputs is None else outputs)
        for n in names:
            if n not in self.output_names:
                raise ArchError(f"unknown output '{n}' (the model's outputs: {', '.join(self.output_names)})",
                                hint=did_you_mean(n, self.output_names))
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4        # the failure is reported below, not as a raw log line
        try:
            if on_device or any(isinstance(v, ort.OrtValue) for v in arrays.values()):
                return self._run_bound(arrays, names, quiet, on_device)
            results = self._sess.run(names, arrays, quiet)
        except Exception as e:
            # The inputs passed every check we can make; what remains is data-dependent (a token
            # id outside the embedding table), a size condition the file does not record (it was
            # not exported by archdsl), or a bug in the exported graph.
            raise ArchError(f"ONNX Runtime failed running '{self.name}' on {self.device}: {_first_line(e)}",
                            hint="check the inputs: integer ids within their range, sizes the model's "
                                 "layers can take. If they are right, please report this as an archdsl "
                                 "bug, with the .onnx file") from None
        return dict(zip(names, results))

    __call__ = run

    def _run_bound(self, arrays: dict, names: list[str], run_options, on_device: bool) -> dict:
        binding = self._sess.io_binding()
        for name, v in arrays.items():
            if isinstance(v, ort.OrtValue):
                binding.bind_ortvalue_input(name, v)
            else:
                binding.bind_cpu_input(name, v)
        for name in names:
            binding.bind_output(name, self.device)
        self._sess.run_with_iobinding(binding, run_options)
        values = binding.get_outputs()
        if on_device:
            return dict(zip(names, values))
        return {n: v.numpy() for n, v in zip(names, values)}

    def to_device(self, value, name: str | None = None) -> "ort.OrtValue":
        """An array copied into this session's device memory (an OrtValue to feed `run`); with
        `name`, checked and cast as that input's feed would be."""
        if isinstance(value, ort.OrtValue):
            return value
        arr = self._convert(self._in[name], value) if name is not None else _contiguous(np.asarray(value))
        return ort.OrtValue.ortvalue_from_numpy(arr, self.device, 0)

    @staticmethod
    def _convert(info: IOInfo, value) -> np.ndarray:
        if isinstance(value, ort.OrtValue):    # on a device already: no cast possible, only checks
            if value.data_type() != info.type:
                raise ArchError(f"input '{info.name}' expects {info.type_str}, got an OrtValue of "
                                f"{value.data_type()}", hint="copy it to the host, convert it, and feed the array")
            return value
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        want = info.dtype
        if want is None or arr.dtype == want:
            return _contiguous(arr)
        got = arr.dtype
        if want == np.object_:  # string input
            if got.kind in "UO":
                return _contiguous(arr.astype(object))
        elif _same_kind(got, want):
            bad = _value_that_does_not_fit(arr, want)
            if bad is None:
                return _contiguous(arr.astype(want))
            raise ArchError(f"input '{info.name}' expects {want.name}{format_shape(info.shape)}, got {got.name} "
                            f"array with the value {bad!r}, which does not fit in {want.name}",
                            hint=f"{want.name} holds {_dtype_range(want)}; a feed of {got.name} is cast to "
                                 f"{want.name} when every value fits")
        how = f"convert it with .astype(np.{want.name})"
        if got.kind == "f" and want.kind in "iu":
            how = f"integer ids are expected; {how} (after rounding, if need be)"
        raise ArchError(f"input '{info.name}' expects {want.name}{format_shape(info.shape)}, got {got.name} "
                        f"array of shape {_got_shape(arr.shape)}", hint=how)

    @staticmethod
    def _check_shape(info: IOInfo, shape: tuple, dims: dict) -> ArchError | None:
        want = info.shape
        if want is None:
            return None
        expect = f"{info.dtype.name if info.dtype is not None else info.type}{format_shape(want)}"
        if len(shape) != len(want):
            return ArchError(f"input '{info.name}' expects rank {len(want)} {expect}, got rank {len(shape)} "
                             f"shape {_got_shape(shape)}",
                             hint=_rank_hint(len(want), len(shape)))
        for i, (w, g) in enumerate(zip(want, shape)):
            if isinstance(w, int) and w >= 0 and w != g:
                return ArchError(f"input '{info.name}' expects {expect}, got shape {_got_shape(shape)}: "
                                 f"dim {i} must be {w}, not {g}")
        for i, (w, g) in enumerate(zip(want, shape)):
            if isinstance(w, str):
                if w in dims and dims[w][0] != g:
                    v, other, oshape = dims[w]
                    where = f"input '{other}'" if other != info.name else "an earlier dim of the same input"
                    return ArchError(
                        f"dimension '{w}' disagrees: input '{info.name}' {format_shape(want)} has {w}={g} "
                        f"(shape {_got_shape(shape)}), but {where} has {w}={v} (shape {_got_shape(oshape)})",
                        hint=f"all inputs sharing the dim '{w}' must have the same size there")
                dims.setdefault(w, (g, info.name, shape))
        return None


def _contiguous(a: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
    return a if a.flags.c_contiguous else a.copy(order="C")


def _rank_hint(want: int, got: int) -> str | None:
    if got == want - 1:
        return "add the batch dimension, e.g. x[None]"
    if got == want + 1:
        return "is there an extra leading dimension? e.g. x[0] or x.squeeze(0)"
    return None


def _same_kind(got: np.dtype, want: np.dtype) -> bool:
    """Floats into a float input, integers (signed or not) into an integer input."""
    return (got.kind == want.kind == "f") or (got.kind in "iu" and want.kind in "iu")


def _value_that_does_not_fit(arr: np.ndarray, want: np.dtype):
    """The first value (as a Python number) of `arr` outside `want`'s range, or None when all fit."""
    if arr.size == 0 or np.can_cast(arr.dtype, want, "safe"):
        return None
    if want.kind == "f":
        with np.errstate(invalid="ignore"):
            over = np.isfinite(arr) & (np.abs(arr) > np.finfo(want).max)
    else:
        info = np.iinfo(want)
        over = (arr < info.min) | (arr > info.max)
    if not over.any():
        return None
    return arr.reshape(-1)[int(np.argmax(over.reshape(-1)))].item()


def _dtype_range(dt: np.dtype) -> str:
    if dt.kind == "f":
        return f"values up to ±{float(np.finfo(dt).max):.4g}"
    info = np.iinfo(dt)
    return f"{info.min:,} to {info.max:,}"


# -- inputs from files ---------------------------------------------------------------------------

def load_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    """Parse CLI input specs: NAME=FILE.npy, NAME=FILE.npz:ARRAY, or NAME=FILE.npz when the
    archive holds exactly one array. Never unpickles (allow_pickle=False)."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, target = str(spec).partition("=")
        name = name.strip()
        if not sep or not name or not target:
            raise ArchError(f"bad input '{spec}': expected NAME=FILE.npy or NAME=FILE.npz:ARRAY",
                            hint="e.g. --input image=batch.npy or --input tokens=data.npz:tokens")
        if name in out:
            raise ArchError(f"input '{name}' is given twice ('{spec}')")
        path, key = target, None
        if not os.path.exists(target) and ":" in target:
            left, _, right = target.rpartition(":")
            if os.path.exists(left) or left.lower().endswith(".npz"):
                path, key = left, right
                if not key:
                    raise ArchError(f"bad input '{spec}': no array name after ':'",
                                    hint=f"write {name}={path}:ARRAY")
        out[name] = _load_array(spec, name, path, key)
    return out


def _load_array(spec: str, name: str, path: str, key: str | None) -> np.ndarray:
    if not os.path.exists(path):
        raise ArchError(f"input '{name}': no such file '{path}'")
    if os.path.isdir(path):
        raise ArchError(f"input '{name}': '{path}' is a directory, not a .npy/.npz file")
    from .datafile import read_arrays
    loaded = read_arrays(path, f"input '{name}': file")     # regular files only, never unpickled
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise ArchError(f"input '{name}': '{path}' is a single .npy array, it has no array '{key}'",
                            hint=f"write {name}={path}")
        return loaded
    names = list(loaded)
    if key is None:
        if len(names) != 1:
            raise ArchError(f"input '{name}': '{path}' holds {len(names)} arrays "
                            f"({', '.join(names) or 'none'}); say which",
                            hint=f"write {name}={path}:{names[0] if names else 'ARRAY'}")
        key = names[0]
    if key not in names:
        raise ArchError(f"input '{name}': '{path}' has no array '{key}' (it has: {', '.join(names) or 'none'})",
                        hint=did_you_mean(key, names))
    return loaded[key]
