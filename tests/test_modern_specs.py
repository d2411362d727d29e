"""Today's architectures, written from their papers and torchvision's definitions (specs/): each
fresh export's output depends on its input; PyTorch (torchvision-style modules, Hugging Face's
LlamaForCausalLM) computes the same with the same weights; the U-Net runs at sizes its shape
constraints allow and `archdsl run` refuses the others in words. The published parameter counts
are asserted in test_specs.py, ONNX Runtime against the NumPy engine at two batch sizes and two
opsets in test_onnx_specs.py; the ops the specs brought (StochasticDepth, Concat's broadcast,
RelativePositionBias2d, ShiftedWindowMask) go through test_op_contract.py and are checked against
torchvision's own code here."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.cli import main
from archdsl.errors import ArchError
from archdsl.passes.init import initialize
from archdsl.train.checkpoint import load_weights
from harness import check_parity, ort_run, random_inputs

SPECS = Path(__file__).resolve().parent.parent / "specs"


def compile_spec(name: str, model: str | None = None, **overrides):
    return archdsl.compile(SPECS / f"{name}.arch").model(model, **overrides)


def rows_spread(y: np.ndarray) -> float:
    """How much the rows of a batch differ, relative to the output's size."""
    y = y.reshape(y.shape[0], -1).astype(np.float64)
    return float(np.abs(y - y[:1]).max() / (np.abs(y).max() + 1e-30))


# -- a fresh export computes something that depends on its input -------------------------------
# Full-size networks, except ViT and Llama at a smaller width (the depth, which decides whether
# a signal survives initialisation, is the published one).
FRESH = [("mobilenet_v2", None, {}), ("efficientnet_b0", None, {}), ("densenet121", None, {}),
         ("convnext_t", None, {}), ("swin_t", None, {}), ("unet", None, {"width": 16}),
         ("vit_b16", None, {"d": 192, "heads": 3, "mlp": 768}),
         ("llama", "Llama", {"vocab": 256, "d": 64, "heads": 4, "kv_heads": 2, "ffn": 176})]


@pytest.mark.parametrize("name, model, overrides", FRESH, ids=[f[0] for f in FRESH])
def test_batch_rows_of_a_fresh_export_differ(name, model, overrides):
    m = compile_spec(name, model, **overrides)
    weights = initialize(m.ir, seed=0)
    feed = random_inputs(m.ir, seed=1, dims={"N": 2, "T": 6, "H": 32, "W": 32}, high=256)
    if name == "vit_b16":
        # torchvision (and the paper, for fine-tuning) zero-initialise the head: a fresh ViT says 0
        # to every image. The rest of the network is what carries the input to it.
        assert not weights["head.weight"].any() and not weights["head.bias"].any()
        assert not ort_run(m.to_onnx(weights=weights), feed)["logits"].any()
        weights["head.weight"] = np.random.default_rng(2).standard_normal(weights["head.weight"].shape,
                                                                           ).astype(np.float32) * 0.02
    (y,) = ort_run(m.to_onnx(weights=weights), feed).values()
    assert np.all(np.isfinite(y))
    assert rows_spread(y) > 1e-3, f"{name}: the rows of a fresh export agree to {rows_spread(y):.1e}"


# -- the U-Net: symbolic H and W, multiples of 16 -------------------------------------------------
def test_unet_runs_at_sizes_its_constraints_allow_and_names_them():
    m = compile_spec("unet", width=4)
    assert str(m.ir.outputs[0].type) == "f32[N, 2, H, W]"
    texts = {c.text() for c in m.ir.constraints}
    assert "2*(H//2//2//2//2) = H//2//2//2" in texts and "2*(W//2) = W" in texts
    weights = initialize(m.ir, seed=0)
    for h, w in ((32, 48), (64, 16)):
        x = {"image": np.random.default_rng(h).standard_normal((2, 1, h, w)).astype(np.float32)}
        out = check_parity(m.ir, x, weights)["mask"]
        assert out.shape == (2, 2, h, w)


def test_archdsl_run_refuses_a_size_the_unet_cannot_take(tmp_path, capfd):
    onnx_path = tmp_path / "unet.onnx"
    assert main(["export", str(SPECS / "unet.arch"), "--set", "width=4", "-o", str(onnx_path)]) == 0
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.zeros((1, 1, 96, 112), np.float32))
    np.save(bad, np.zeros((1, 1, 100, 96), np.float32))
    assert main(["run", str(onnx_path), "-i", f"image={good}", "-o", str(tmp_path / "y.npz")]) == 0
    assert np.load(tmp_path / "y.npz")["mask"].shape == (1, 2, 96, 112)
    capfd.readouterr()
    assert main(["run", str(onnx_path), "-i", f"image={bad}"]) == 1
    err = capfd.readouterr().err
    assert "does not fit model UNet: H must be a multiple of 16, got H = 100" in err
    assert f"Concat at {SPECS / 'unet.arch'}:" in err and "H = 96 or 112 would fit" in err
    assert "Traceback" not in err and "[E:onnxruntime" not in err


# -- stochastic depth -----------------------------------------------------------------------------
def test_stochastic_depth_grows_with_the_block_index_as_torchvision():
    """EfficientNet: 0.2 * i / 16 over its 16 blocks (on the residual ones); ConvNeXt-T: 0.1 * i / 17
    over 18; Swin-T: 0.2 * i / 11 over 12 (each block twice: attention and MLP)."""
    def rates(name):
        return [round(n.attrs["p"], 12) for n in compile_spec(name).ir.nodes if n.kind == "StochasticDepth"]
    residual = [2, 4, 6, 7, 9, 10, 12, 13, 14]      # EfficientNet-B0's blocks that keep their shape
    assert rates("efficientnet_b0") == [round(0.2 * i / 16, 12) for i in residual]
    assert rates("convnext_t") == [round(0.1 * i / 17, 12) for i in range(18)]
    assert rates("swin_t") == [round(0.2 * i / 11, 12) for i in range(12) for _ in (0, 1)]


def test_stochastic_depth_drops_whole_rows_in_training_only():
    m = archdsl.compile("model M { input x: f32[N, 3, 2, 2]\n output y = x -> StochasticDepth(0.3) }").model()
    ex = m.executor(seed=4)
    x = np.ones((4000, 3, 2, 2), np.float32)
    y = ex.run({"x": x}, training=True)["y"].reshape(4000, -1)
    dropped = (y == 0).all(axis=1)
    assert np.all(dropped | np.isclose(y, 1 / 0.7).all(axis=1))       # a row is dropped whole, or scaled
    assert abs(dropped.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(ex.run({"x": x})["y"], x)           # the identity at inference
    proto = m.to_onnx()
    assert [n.op_type for n in proto.graph.node] in ([], ["Identity"])


# -- the language: sum() and tuple slices (the stage tables' running block index) ---------------
def test_sum_and_tuple_slices():
    m = archdsl.compile("""
model M(depths = (3, 3, 9, 3)) {
  input x: f32[N, 4]
  output y = x -> Linear(sum(depths[:2]) + sum(depths[1:][::2]) + len(depths[::-1]) + sum(()))
}""").model()
    assert str(m.ir.outputs[0].type) == "f32[N, 16]"
    for src, msg in (("sum(4)", "sum() needs a tensor, or a tuple of numbers"), ("(1, 2)[::0]", "a slice step cannot be 0"),
                     ("(1, 2)[:1.5]", "a slice bound must be an int"), ("(1, 2)[...]", "one integer index or slice")):
        with pytest.raises(ArchError, match=msg.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            archdsl.compile(f"model M {{ input x: f32[N, 4]\n output y = x -> Linear({src}) }}").model()


# -- Concat(broadcast=true): ViT's class token -----------------------------------------------------
def test_concat_broadcast_prepends_one_class_token_to_every_row():
    torch = pytest.importorskip("torch")
    m = archdsl.compile("""
model M {
  input x: f32[N, 5, 4]
  param cls: f32[1, 1, 4] = normal(std=1.0)
  output y = (cls, x) -> Concat(axis=1, broadcast=true)
}""").model()
    w = initialize(m.ir, seed=0)
    x = random_inputs(m.ir, dims={"N": 3})
    y = check_parity(m.ir, x, w)["y"]
    cls = torch.from_numpy(w["cls"])
    want = torch.cat([cls.expand(3, -1, -1), torch.from_numpy(x["x"])], dim=1).numpy()   # torchvision's ViT
    np.testing.assert_array_equal(y, want)
    with pytest.raises(ArchError, match="broadcast=true"):
        archdsl.compile("model M { input x: f32[N, 5, 4]\n input c: f32[1, 1, 4]\n"
                        " output y = (c, x) -> Concat(axis=1) }").model()


# -- Swin's window biases against torchvision's code -----------------------------------------------
def test_relative_position_bias_and_shifted_window_mask_as_torchvision():
    torch = pytest.importorskip("torch")
    import torchvision_style as tv
    attn = tv.ShiftedWindowAttention(8, (3, 3), (1, 1), 2)
    m = archdsl.compile("""
model M {
  input windows: f32[N, 9, 8]
  input x: f32[N, 6, 6, 8]
  output bias = windows -> RelativePositionBias2d(2, 3)
  output mask = x -> ShiftedWindowMask(3, 1)
}""").model()
    table = np.random.default_rng(0).standard_normal((25, 2)).astype(np.float32)
    out = m.executor({"relativepositionbias2d_1.relative_position_bias_table": table}).run(
        random_inputs(m.ir))
    with torch.no_grad():
        attn.relative_position_bias_table.copy_(torch.from_numpy(table))
        want = attn.relative_position_bias_table[attn.relative_position_index].view(9, 9, -1).permute(2, 0, 1)
    np.testing.assert_array_equal(out["bias"], want.numpy())
    # torchvision's mask over a 6x6 map of 3x3 windows shifted by 1, as shifted_window_attention builds it
    region = torch.zeros(6, 6)
    for k, (h, w) in enumerate((h, w) for h in ((0, -3), (-3, -1), (-1, None)) for w in ((0, -3), (-3, -1), (-1, None))):
        region[h[0]:h[1], w[0]:w[1]] = k
    ids = region.view(2, 3, 2, 3).permute(0, 2, 1, 3).reshape(4, 9)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    want = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0).unsqueeze(1)
    np.testing.assert_array_equal(out["mask"], want.numpy())


# -- oracles: the same weights in PyTorch ------------------------------------------------------------
def by_order(ir, module, order=None) -> dict[str, np.ndarray]:
    """archdsl weights from a torchvision-style module's state_dict, matched in order (torch keeps a
    module's own parameters before its children's, as the specs declare them); an attention's packed
    q, k, v (nn.MultiheadAttention's in_proj, Swin's qkv) and its output projection fill archdsl's
    q/k/v/out weights and biases. order: the state_dict's keys rearranged where a spec declares
    differently."""
    sd = module.state_dict()
    src = [(k, sd[k].detach().numpy()) for k in (order or sd)
           if not k.endswith(("num_batches_tracked", "relative_position_index"))]
    names, out, i, j = list(ir.parameters), {}, 0, 0
    while j < len(names):
        n = names[j]
        if n.endswith(".q_weight"):
            base = n[:-len("q_weight")]
            (_, w), (_, b), (_, ow), (_, ob) = src[i:i + 4]
            for part, wp, bp in zip("qkv", np.split(w, 3), np.split(b, 3)):
                out[f"{base}{part}_weight"], out[f"{base}{part}_bias"] = wp, bp
            out[f"{base}out_weight"], out[f"{base}out_bias"] = ow, ob
            i, j = i + 4, j + 8
            continue
        k, a = src[i]
        assert tuple(ir.parameters[n].shape) == a.shape, f"{n} {tuple(ir.parameters[n].shape)} <- {k} {a.shape}"
        out[n] = a
        i, j = i + 1, j + 1
    assert i == len(src) and set(out) == set(names)
    return out


def randomized(module, seed=0):
    """Random weights: norm scales, layer scales and BatchNorm variances around 1, the rest scaled by
    their fan-in, so that every part of a deep network shows in its output."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith(("running_var", "layer_scale")) or (t.ndim == 1 and name.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.ndim == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
    return module.eval()


def image(n=2, size=224, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def torch_out(module, x):
    import torch
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def assert_close(ours, theirs):
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * scale, rtol=1e-4)


@pytest.mark.parametrize("name, factory", [("mobilenet_v2", "MobileNetV2"), ("convnext_t", "ConvNeXt"),
                                           ("swin_t", "SwinTransformer")])
def test_full_size_vision_models_match_torchvision(name, factory):
    pytest.importorskip("torch")
    import torchvision_style as tv
    module = randomized(getattr(tv, factory)(num_classes=10))
    m = compile_spec(name, classes=10)
    order = list(module.state_dict())
    if name == "swin_t":        # torchvision's PatchMerging makes its reduction before its norm
        for k in [k for k in order if k.endswith("reduction.weight")]:
            order.remove(k)
            order.insert(order.index(k.replace("reduction.weight", "norm.bias")) + 1, k)
    x = image(2, seed=1)
    ours = m.executor(by_order(m.ir, module, order)).run({"image": x})["logits"]
    assert_close(ours, torch_out(module, x))


def test_vit_matches_torchvision_on_onnx_runtime():
    pytest.importorskip("torch")
    import torchvision_style as tv
    cfg = dict(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10)
    module = randomized(tv.VisionTransformer(**cfg))
    m = compile_spec("vit_b16", classes=10, image_size=64, layers=2, heads=4, d=64, mlp=128)
    order = list(module.state_dict())
    order.remove("class_token")                      # a module's own parameter first, in torch
    order.insert(order.index("conv_proj.bias") + 1, "class_token")
    w = by_order(m.ir, module, order)
    x = image(3, size=64, seed=2)
    assert_close(ort_run(m.to_onnx(weights=w, opset=17), {"image": x})["logits"], torch_out(module, x))


def test_convnext_block_matches_torch_in_float64_with_gradients():
    torch = pytest.importorskip("torch")
    import torchvision_style as tv
    from archdsl.autodiff import Tensor, backward
    src = (SPECS / "convnext_t.arch").read_text().split("model ConvNeXtT")[0]
    m = archdsl.compile(src + "model Block {\n input x: f32[N, 8, 5, 5]\n output y = x -> CNBlock(8, 0.0, 0.5) }").model()
    block = tv.CNBlock(8, 0.5).double()
    w = {k: v.astype(np.float64) for k, v in initialize(m.ir, seed=3).items()}
    with torch.no_grad():                     # the same weights, in state_dict order
        for t, n in zip(block.state_dict().values(), m.ir.parameters):
            t.copy_(torch.from_numpy(w[n]))
    x = np.random.default_rng(4).standard_normal((2, 8, 5, 5))
    probe = np.random.default_rng(5).standard_normal((2, 8, 5, 5))
    xt, xa = torch.tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    ex = NumpyExecutor(m.ir, w, dtype=np.float64)
    y = ex.forward({"x": xa})["y"]
    backward((y * probe).sum())
    yt = block(xt)
    (yt * torch.from_numpy(probe)).sum().backward()
    np.testing.assert_allclose(y.data, yt.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(xa.grad, xt.grad.numpy(), atol=1e-10)
    for (k, p), n in zip(block.named_parameters(), m.ir.parameters):
        np.testing.assert_allclose(ex.params[n].grad, p.grad.numpy(), atol=1e-10, err_msg=k)


# -- Llama against Hugging Face's LlamaForCausalLM -----------------------------------------------------
def hf_llama(tmp_path, **cfg):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(rms_norm_eps=1e-5, **cfg)).eval()
    model.save_pretrained(tmp_path / "hf")
    return model


def hf_logits(model, ids):
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


def test_llama_tiny_imports_a_hugging_face_folder_and_matches_it(tmp_path):
    hf = hf_llama(tmp_path, vocab_size=64, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    m = compile_spec("llama", "LlamaTiny")
    w = load_weights(tmp_path / "hf", m.ir)
    ids = np.random.default_rng(0).integers(0, 64, (2, 9))
    theirs = hf_logits(hf, ids)
    assert_close(m.executor(w).run({"tokens": ids})["logits"], theirs)
    assert_close(ort_run(m.to_onnx(weights=w, opset=17), {"tokens": ids})["logits"], theirs)


def test_llama_tied_multi_query_in_one_command_with_verify(tmp_path, capsys):
    hf = hf_llama(tmp_path, vocab_size=96, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=6, num_key_value_heads=1, tie_word_embeddings=True)
    sets = ["vocab=96", "d=48", "ffn=128", "layers=3", "heads=6", "kv_heads=1"]
    rc = main(["import-weights", str(SPECS / "llama.arch"), str(tmp_path / "hf"), *sum((["--set", s] for s in sets), []),
               "-o", str(tmp_path / "llama.onnx"), "--verify"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "verified against the source model on ONNX Runtime" in out.out
    ids = np.random.default_rng(1).integers(0, 96, (1, 7))
    got = ort_run(onnx.load(str(tmp_path / "llama.onnx")), {"tokens": ids})["logits"]
    assert_close(got, hf_logits(hf, ids))
    # and back: a folder Hugging Face loads strictly, with the same logits
    m = compile_spec("llama", "Llama", vocab=96, d=48, ffn=128, layers=3, heads=6, kv_heads=1)
    w = load_weights(tmp_path / "hf", m.ir)
    np.savez(tmp_path / "w.npz", **w)
    assert main(["export-weights", str(SPECS / "llama.arch"), *sum((["--set", s] for s in sets), []),
                 "--weights", str(tmp_path / "w.npz"), "-o", str(tmp_path / "back")]) == 0
    import transformers
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
    np.testing.assert_allclose(hf_logits(again, ids), hf_logits(hf, ids), atol=1e-6)
