"""archdsl.runtime: sessions on a chosen device, input checks, model and input loading errors.

There is no GPU here; CUDA paths are exercised by monkeypatching ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from archdsl.errors import ArchError, ArchErrors
from archdsl.runtime import IOInfo, Session, load_inputs


def add_model() -> onnx.ModelProto:
    """out = a + b, a: f32[N, 3], b: f32[N, 3]; plus ids: i64[N] -> cnt = ids + 1 (i64[N])."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])
    cnt = helper.make_tensor_value_info("cnt", TensorProto.INT64, ["N"])
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["out"]),
                           helper.make_node("Add", ["ids", "one"], ["cnt"])],
                          "add", [a, b, ids], [out, cnt], initializer=[one])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "add.onnx"
    onnx.save(add_model(), p)
    return p


@pytest.fixture(scope="module")
def sess(model_path):
    return Session(model_path, device="cpu")


def feeds(n=2, **over):
    rng = np.random.default_rng(n)
    f = {"a": rng.standard_normal((n, 3)).astype(np.float32),
         "b": rng.standard_normal((n, 3)).astype(np.float32),
         "ids": np.arange(n, dtype=np.int64)}
    f.update(over)
    return f


def msg(exc_info) -> str:
    return exc_info.value.format()


# -- describing and running ------------------------------------------------------------------------

def test_descriptions(sess):
    assert [i.name for i in sess.inputs] == ["a", "b", "ids"]
    assert sess.inputs[0] == IOInfo("a", np.dtype(np.float32), ("N", 3), "tensor(float)")
    assert sess.inputs[2].dtype == np.int64 and sess.inputs[2].shape == ("N",)
    assert [(o.name, o.dtype, o.shape) for o in sess.outputs] == [
        ("out", np.float32, ("N", 3)), ("cnt", np.int64, ("N",))]
    assert str(sess.inputs[0]) == "a: float32[N, 3]"
    assert "add.onnx on cpu" in repr(sess)


def test_run_two_batch_sizes(sess):
    for n in (1, 7):
        f = feeds(n)
        out = sess.run(f)
        assert set(out) == {"out", "cnt"}
        np.testing.assert_allclose(out["out"], f["a"] + f["b"], rtol=1e-6)
        np.testing.assert_array_equal(out["cnt"], np.arange(n) + 1)
        assert out["out"].shape == (n, 3)


def test_run_selected_outputs_and_call(sess):
    out = sess(feeds(3), )
    assert set(out) == {"out", "cnt"}
    assert set(sess.run(feeds(3), outputs=["cnt"])) == {"cnt"}
    with pytest.raises(ArchError) as e:
        sess.run(feeds(3), outputs=["outt"])
    assert "unknown output 'outt'" in msg(e) and "did you mean 'out'" in msg(e)


def test_from_bytes_and_proto():
    m = add_model()
    for src, name in ((m.SerializeToString(), "<bytes>"), (m, "<model>")):
        s = Session(src, device="cpu")
        assert s.name == name and s.device == "cpu"
        assert s.run(feeds(2))["out"].shape == (2, 3)


def test_cpu_device(sess):
    assert sess.device == "cpu" and sess.providers == ["CPUExecutionProvider"]
    assert sess.fallback_reason is None


def test_safe_casts(sess):
    f = feeds(2)
    out = sess.run({"a": f["a"].astype(np.float64), "b": f["b"].tolist(),  # lists are float64
                    "ids": f["ids"].astype(np.int32)})
    np.testing.assert_allclose(out["out"], f["a"] + f["b"], rtol=1e-6)
    # safe widening within a kind; non-contiguous views are fine too
    out = sess.run(feeds(2, a=np.zeros((3, 2), np.float16).T, ids=np.array([0, 1], np.uint8)))
    assert out["out"].shape == (2, 3)


# -- input checks ----------------------------------------------------------------------------------

def test_missing_input(sess):
    f = feeds(2)
    del f["b"]
    with pytest.raises(ArchError) as e:
        sess.run(f)
    assert "missing input 'b': float32[N, 3]" in msg(e)


def test_unknown_input_did_you_mean(sess):
    f = feeds(2)
    f["idz"] = f.pop("ids")
    with pytest.raises(ArchErrors) as e:  # unknown 'idz' and missing 'ids', both reported
        sess.run(f)
    text = msg(e)
    assert "unknown input 'idz'" in text and "did you mean 'ids'?" in text
    assert "missing input 'ids'" in text and "2 errors" in text


def test_not_a_dict(sess):
    with pytest.raises(ArchError, match="must be a dict"):
        sess.run([np.zeros((2, 3))])


@pytest.mark.parametrize("name,value,expected,got", [
    ("a", np.zeros((2, 3), np.int64), "float32[N, 3]", "int64"),
    ("ids", np.zeros(2, np.float32), "int64[N]", "float32"),
    ("ids", np.zeros(2, np.float64), "int64[N]", "float64"),
    ("a", np.zeros((2, 3), bool), "float32[N, 3]", "bool"),
])
def test_dtype_mismatch(sess, name, value, expected, got):
    with pytest.raises(ArchError) as e:
        sess.run(feeds(2, **{name: value}))
    text = msg(e)
    assert f"input '{name}' expects {expected}, got {got}" in text
    assert ".astype(np." in text


def test_narrower_dtypes_of_the_same_kind_are_cast_when_every_value_fits():
    """One rule for floats and ints (it used to cast float64 silently but refuse int64): a feed of
    the input's kind is cast when its values fit, and refused, naming the value, when one does not."""
    def identity(dtype):
        x = helper.make_tensor_value_info("x", dtype, [2])
        y = helper.make_tensor_value_info("y", dtype, [2])
        m = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        return Session(m, device="cpu")
    i32, f32, u8 = identity(TensorProto.INT32), identity(TensorProto.FLOAT), identity(TensorProto.UINT8)
    assert i32.run({"x": np.array([1, -2])})["y"].tolist() == [1, -2]              # int64 -> int32
    assert i32.run({"x": np.array([1, 2], np.int16)})["y"].dtype == np.int32
    assert i32.run({"x": np.array([1, 2], np.uint64)})["y"].tolist() == [1, 2]
    assert f32.run({"x": np.array([0.5, np.inf])})["y"].tolist() == [0.5, np.inf]  # float64 -> float32
    for sess, value, bad in ((i32, np.array([1, 2 ** 40]), "1099511627776"), (f32, np.array([0.0, -1e300]), "-1e+300"),
                             (u8, np.array([3, -1]), "-1"), (i32, np.array([2 ** 63], np.uint64), "9223372036854775808")):
        with pytest.raises(ArchError) as e:
            sess.run({"x": value})
        assert f"with the value {bad}, which does not fit in" in msg(e) and "when every value fits" in msg(e)


def test_rank_mismatch(sess):
    with pytest.raises(ArchError) as e:
        sess.run(feeds(2, a=np.zeros(3, np.float32)))
    text = msg(e)
    assert "input 'a' expects rank 2 float32[N, 3], got rank 1 shape (3,)" in text
    assert "batch dimension" in text


def test_static_dim_mismatch(sess):
    with pytest.raises(ArchError) as e:
        sess.run(feeds(2, b=np.zeros((2, 4), np.float32)))
    assert "input 'b' expects float32[N, 3], got shape (2, 4): dim 1 must be 3, not 4" in msg(e)


def test_symbolic_dims_must_agree(sess):
    with pytest.raises(ArchError) as e:
        sess.run(feeds(2, b=np.zeros((5, 3), np.float32)))
    text = msg(e)
    assert "dimension 'N' disagrees" in text
    assert "input 'b' [N, 3] has N=5 (shape (5, 3))" in text
    assert "input 'a' has N=2 (shape (2, 3))" in text
    with pytest.raises(ArchError, match="dimension 'N' disagrees: input 'ids'"):
        sess.run(feeds(2, ids=np.arange(4)))


def test_several_errors_reported_together(sess):
    with pytest.raises(ArchErrors) as e:
        sess.run({"a": np.zeros((2, 3), np.int64), "b": np.zeros(3, np.float32), "ids": np.arange(2)})
    assert len(e.value.errors) == 2


def test_runtime_failure_is_arch_error():
    # Gather with an out-of-range index passes every static check and fails inside ORT.
    t = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], np.zeros(8).tolist())
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    m = helper.make_model(helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "g",
                                            [ids], [y], initializer=[t]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    s = Session(m, device="cpu")
    assert s.run({"ids": np.array([0, 3])})["y"].shape == (2, 2)
    with pytest.raises(ArchError, match="ONNX Runtime failed running '<model>' on cpu"):
        s.run({"ids": np.array([0, 9])})


def test_unknown_rank_input_is_not_a_scalar():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)   # rank unknown
    s_ = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])    # scalar
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "g", [x, s_], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    s = Session(m, device="cpu")
    assert s.inputs[0].shape is None and s.inputs[1].shape == ()
    assert str(s.inputs[0]) == "x: float32[...]"
    out = s.run({"x": np.ones((2, 5), np.float32), "s": np.float32(3)})
    np.testing.assert_array_equal(out["y"], np.full((2, 5), 3, np.float32))
    with pytest.raises(ArchError, match="input 's' expects rank 0"):
        s.run({"x": np.ones(2, np.float32), "s": np.ones(1, np.float32)})


# -- loading errors --------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(ArchError) as e:
        Session(tmp_path / "nope.onnx", device="cpu")
    assert "cannot load model" in msg(e) and "nope.onnx': no such file" in msg(e)


def test_directory(tmp_path):
    with pytest.raises(ArchError, match="is a directory"):
        Session(tmp_path, device="cpu")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ArchError, match="empty.onnx': the file is empty"):
        Session(p, device="cpu")
    with pytest.raises(ArchError, match="empty"):
        Session(b"", device="cpu")


@pytest.mark.parametrize("cut", [0.5, 0.9, 20])
def test_truncated_file(tmp_path, model_path, cut):
    data = model_path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[:n])
    with pytest.raises(ArchError) as e:
        Session(p, device="cpu")
    assert f"cannot load model '{p}'" in msg(e)
    assert "Traceback" not in msg(e) and "onnxruntime_src" not in msg(e)


@pytest.mark.parametrize("content", [b"not an onnx model at all\n", b"\x93NUMPY\x01\x00garbage", bytes(range(256)) * 4])
def test_not_an_onnx_file(tmp_path, content):
    p = tmp_path / "junk.onnx"
    p.write_bytes(content)
    with pytest.raises(ArchError) as e:
        Session(p, device="cpu")
    text = msg(e)
    assert f"cannot load model '{p}'" in text
    assert "onnxruntime_src" not in text and "[ONNXRuntimeError]" not in text


def test_too_new_ir_version_has_hint(tmp_path):
    m = add_model()
    m.ir_version = 99
    p = tmp_path / "new.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ArchError) as e:
        Session(p, device="cpu")
    assert "IR version" in msg(e) and "hint:" in msg(e) and "onnxruntime_src" not in msg(e)


def test_bad_source_type_and_device(model_path):
    with pytest.raises(ArchError, match="cannot load a model from a int"):
        Session(3)
    with pytest.raises(ArchError) as e:
        Session(model_path, device="gpu")
    assert "unknown device 'gpu'" in msg(e)


# -- devices (no GPU here: ONNX Runtime is monkeypatched) ------------------------------------------

class FakeSession:
    """Stands in for ort.InferenceSession; `gets` is what get_providers() reports for a CUDA request."""
    created: list = []

    def __init__(self, real_cls, gets=None, fail_cuda=None):
        self.real_cls, self.gets, self.fail_cuda = real_cls, gets, fail_cuda

    options: list = []

    def __call__(self, model, sess_options=None, providers=None, provider_options=None):
        FakeSession.created.append(list(providers))
        FakeSession.options.append(dict(zip(providers, provider_options or [{}] * len(providers))))
        cuda = "CUDAExecutionProvider" in providers
        # the real session runs on the CPU: a CUDA request's options (no CPU fallback) do not apply
        real = self.real_cls(model, sess_options=None if cuda else sess_options, providers=["CPUExecutionProvider"])
        if cuda:
            if self.fail_cuda:
                raise RuntimeError(self.fail_cuda)
            reported = list(self.gets)

            class Wrapped:  # the real CPU session, claiming the providers we want it to
                def __getattr__(self, k):
                    return getattr(real, k)

                def get_providers(self):
                    return reported
            return Wrapped()
        return real


@pytest.fixture
def with_cuda_listed(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    FakeSession.created = []
    FakeSession.options = []

    def install(**kw):
        monkeypatch.setattr(ort, "InferenceSession", FakeSession(ort.InferenceSession, **kw))
    return install


def test_cuda_without_provider_raises(model_path, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ArchError) as e:
        Session(model_path, device="cuda")
    text = msg(e)
    assert "no CUDAExecutionProvider" in text
    assert "make gpu" in text and "uninstall" in text and "onnxruntime-gpu" in text


def test_auto_falls_back_to_cpu(model_path, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    s = Session(model_path)  # device="auto"
    assert s.requested_device == "auto" and s.device == "cpu"
    assert s.providers == ["CPUExecutionProvider"] and s.fallback_reason is None
    assert s.run(feeds(2))["out"].shape == (2, 3)


def test_cuda_silent_fallback_raises(model_path, with_cuda_listed):
    with_cuda_listed(gets=["CPUExecutionProvider"])
    with pytest.raises(ArchError) as e:
        Session(model_path, device="cuda")
    text = msg(e)
    assert "fell back to the CPU" in text and "cuDNN" in text
    assert FakeSession.created[0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_records_silent_fallback(model_path, with_cuda_listed):
    with_cuda_listed(gets=["CPUExecutionProvider"])
    s = Session(model_path, device="auto")
    assert s.device == "cpu" and "fell back" in s.fallback_reason
    assert s.run(feeds(2))["out"].shape == (2, 3)


def test_cuda_used_when_it_works(model_path, with_cuda_listed):
    with_cuda_listed(gets=["CUDAExecutionProvider", "CPUExecutionProvider"])
    for dev in ("cuda", "auto"):
        s = Session(model_path, device=dev)
        assert s.device == "cuda" and s.providers[0] == "CUDAExecutionProvider"
        assert s.fallback_reason is None
        assert s.run(feeds(4))["out"].shape == (4, 3)


def test_cuda_start_failure(model_path, with_cuda_listed):
    with_cuda_listed(fail_cuda="libcublasLt.so.12: cannot open shared object file")
    with pytest.raises(ArchError) as e:
        Session(model_path, device="cuda")
    assert "could not start CUDA" in msg(e) and "libcublasLt" in msg(e)
    s = Session(model_path, device="auto")
    assert s.device == "cpu" and "libcublasLt" in s.fallback_reason


def test_cuda_request_with_corrupt_model_reports_the_model(tmp_path, with_cuda_listed):
    with_cuda_listed(fail_cuda="protobuf parsing failed")
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"junk junk junk")
    for dev in ("cuda", "auto"):
        with pytest.raises(ArchError, match="cannot load model .*junk.onnx"):
            Session(p, device=dev)


# -- load_inputs -----------------------------------------------------------------------------------

def test_load_inputs_npy_and_npz(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "d.npz", b=a * 2, ids=np.arange(2))
    np.savez(tmp_path / "one.npz", only=a + 1)
    got = load_inputs([f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'd.npz'}:b",
                       f"ids={tmp_path / 'd.npz'}:ids", f"c={tmp_path / 'one.npz'}"])
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], a * 2)
    np.testing.assert_array_equal(got["ids"], np.arange(2))
    np.testing.assert_array_equal(got["c"], a + 1)
    assert load_inputs([]) == {}


def test_load_inputs_feed_a_session(tmp_path, sess):
    f = feeds(3)
    np.savez(tmp_path / "f.npz", **f)
    out = sess.run(load_inputs([f"{k}={tmp_path / 'f.npz'}:{k}" for k in f]))
    np.testing.assert_allclose(out["out"], f["a"] + f["b"])


@pytest.mark.parametrize("spec", ["a.npy", "=a.npy", "a=", "noequals"])
def test_load_inputs_bad_syntax(spec):
    with pytest.raises(ArchError, match="expected NAME=FILE.npy or NAME=FILE.npz:ARRAY"):
        load_inputs([spec])


def test_load_inputs_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(2))
    np.savez(tmp_path / "d.npz", image=np.zeros(2), label=np.zeros(2))
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "junk.npy").write_bytes(b"hello")
    cases = {
        f"x={tmp_path / 'missing.npy'}": "no such file",
        f"x={tmp_path}": "is a directory",
        f"x={tmp_path / 'd.npz'}:imag": "has no array 'imag'",
        f"x={tmp_path / 'd.npz'}": "holds 2 arrays (image, label); say which",
        f"x={tmp_path / 'd.npz'}:": "no array name after ':'",
        f"x={tmp_path / 'a.npy'}:k": "single .npy array",
        f"x={tmp_path / 'obj.npy'}": "holds Python objects",
        f"x={tmp_path / 'junk.npy'}": "is not an .npy or .npz file: it is a text file",
    }
    for spec, text in cases.items():
        with pytest.raises(ArchError) as e:
            load_inputs([spec])
        assert text in msg(e), (spec, msg(e))
    with pytest.raises(ArchError) as e:
        load_inputs([f"x={tmp_path / 'd.npz'}:imag"])
    assert "did you mean 'image'" in msg(e)
    with pytest.raises(ArchError, match="given twice"):
        load_inputs([f"x={tmp_path / 'a.npy'}", f"x={tmp_path / 'a.npy'}"])


def test_load_inputs_never_unpickles(tmp_path, monkeypatch):
    from archdsl import datafile
    seen = []
    real = datafile.npformat.read_array

    def spy(*a, **k):
        seen.append(k.get("allow_pickle"))
        return real(*a, **k)
    monkeypatch.setattr(datafile.npformat, "read_array", spy)
    np.save(tmp_path / "a.npy", np.zeros(2))
    np.savez(tmp_path / "b.npz", b=np.zeros(2))
    load_inputs([f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'b.npz'}"])
    assert seen == [False, False]


# -- precision, CPU fallback, data kept on the device ------------------------------------------------

def test_fp32_turns_tf32_off_and_tf32_asks_for_it(model_path, with_cuda_listed):
    with_cuda_listed(gets=["CUDAExecutionProvider", "CPUExecutionProvider"])
    Session(model_path, device="cuda")
    Session(model_path, device="cuda", precision="tf32")
    assert [o["CUDAExecutionProvider"] for o in FakeSession.options] == [{"use_tf32": "0"}, {"use_tf32": "1"}]


def test_cuda_without_cpu_fallback(model_path, with_cuda_listed):
    with_cuda_listed(gets=["CUDAExecutionProvider"])
    s = Session(model_path, device="cuda", cpu_fallback=False)
    assert FakeSession.created[-1] == ["CUDAExecutionProvider"] and s.device == "cuda"
    with_cuda_listed(fail_cuda="This session cannot use the CPU EP because session.disable_cpu_ep_fallback "
                               "is set; nodes would fall back to CPU: Gather")
    with pytest.raises(ArchError) as e:
        Session(model_path, device="cuda", cpu_fallback=False)
    assert "fallback is disabled" in msg(e) and "--target cuda" in msg(e)
    with pytest.raises(ArchError, match="needs device 'cuda'"):
        Session(model_path, device="cpu", cpu_fallback=False)


def test_outputs_kept_on_the_device_feed_the_next_run(sess):
    f = feeds(3)
    held = sess.run(f, on_device=True)
    assert all(isinstance(v, ort.OrtValue) for v in held.values())
    np.testing.assert_allclose(held["out"].numpy(), f["a"] + f["b"])
    # an output fed back as an input, an array copied to the device once, a host array
    again = sess.run({"a": held["out"], "b": sess.to_device(f["b"], "b"), "ids": held["cnt"]})
    np.testing.assert_allclose(again["out"], f["a"] + 2 * f["b"], rtol=1e-6)
    np.testing.assert_array_equal(again["cnt"], f["ids"] + 2)
    with pytest.raises(ArchError, match="expects float32.*OrtValue of tensor\\(int64\\)"):
        sess.run({"a": held["cnt"], "b": f["b"], "ids": f["ids"]})
    with pytest.raises(ArchError, match="dim 1 must be 3"):
        sess.run({"a": sess.to_device(np.zeros((3, 4), np.float32)), "b": f["b"], "ids": f["ids"]})
