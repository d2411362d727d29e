"""Fast kernels for large 2-D convolutions (issue 21); convolution.py's conv and conv_transpose
hand a call here when `plan` accepts it, and keep their own im2col kernels for everything else.

Measured on the convolutions of a CIFAR ResNet-18 at batch 64, one thread (bench/midsize.md):
im2col + OpenBLAS GEMM reaches 50-90 GFLOP/s, while ONNX Runtime's CPU convolutions (MLAS, a
dependency already) run as fast as PyTorch's oneDNN: its NCHWc direct convolution kernel does a
3x3 64->64 convolution at 32x32 in the time oneDNN does, about twice as fast as im2col.
Winograd or a channels-last implicit im2col written in NumPy would pay several passes over
memory per call and cannot reach that. So:

* forward: one ONNX Runtime session per (shapes, attributes, threads) holding one node: the NCHWc
  form `ReorderInput -> nchwc.Conv -> ReorderOutput` (the graph ONNX Runtime's own layout
  optimiser builds, but with the weight as an input: the NumPy side lays the filter out in MLAS's
  blocked order, [O/B, C/B, kh, kw, B, B] or [O/B, C, kh, kw, B], B the CPU's block size, so the
  weights may change every step), or a plain ONNX Conv where the blocked form does not apply
  (groups, channel counts that do not fit the blocks).
* input gradient: for stride 1, a convolution of dy with the flipped, transposed weight (the same
  kernels); otherwise ONNX ConvTranspose of dy with the same weight (MLAS's GEMM + col2im).
* weight gradient: ONNX Runtime has no kernel for it (the batch/channel-swapped convolution it
  could be written as has a kernel the size of the image, which MLAS runs slowly), so it is
  GEMMs in NumPy, a few images at a time (no 150 MB buffer per convolution, none kept between
  forward and backward): for 3x3 kernels of stride 1 on maps of 8x8 and more, Winograd
  F(3x3, 2x2) with compiled transforms (16 GEMMs as deep as the 2x2 tiles instead of 36
  multiplies per tile; ResNet-18 at batch 64, one thread: 1.98 -> 1.82 s a step); for other
  stride-1 kernels (or without numba) one GEMM per kernel tap on a shifted slice of the padded
  image, no im2col (7% less time than im2col on a ResNet-18's weight gradients); for strided
  1x1 kernels one GEMM on the subsampled image; for inputs of few channels (a 3-channel stem)
  an im2col matrix built by whole-row copies; otherwise im2col + GEMM (ResNet-18 at batch 64,
  one thread: these last three kinds 258 -> 223 ms a step, the stem 17 -> 7 ms).

Sessions bind NumPy arrays in place (IOBinding: no copies); ONNX Runtime's threads follow the
BLAS thread count, without spinning. float32 only (MLAS): float64 (gradient checks) and small
convolutions, where the per-call overhead of a session run (tens of microseconds) would decide,
stay on the NumPy kernels. Set ARCHDSL_CONV=numpy to turn this module off.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import ortkernels
from .im2col import _input_grad
from .ortkernels import blas_threads as _blas_threads
from .ortkernels import run as _run
from .ortkernels import session as _session

__all__ = ["plan", "conv", "conv_transpose", "conv_forward", "conv_input_grad", "conv_weight_grad"]

# Below these, NumPy's im2col kernels are as fast (per-call overhead, tiny feature maps where the
# blocked kernel idles): multiply-accumulates per call, and output positions per image.
MIN_MACS = 20_000_000
MIN_POSITIONS = 64
_IM2COL_BYTES = 4 << 20        # weight gradient: im2col block size (a few images), and its
_IM2COL_ROWS = 2048            # least number of rows (small images: the GEMM needs the length)
# Weight gradient by shifted GEMMs (no im2col) from these sizes: output positions per image (on
# a 4x4 map the zero positions of the padded grid, 9 of 25, cost more than im2col), input
# channels (the GEMMs' width), and the images' block size (the buffer stays in L2).
SHIFTED_POSITIONS = 64
SHIFTED_CHANNELS = 16
_SHIFTED_BYTES = 512 << 10
# Weight gradient of 3x3 stride-1 kernels by Winograd F(3x3, 2x2) (with the compiled kernels):
# whether, its images' block (at least this many 2x2 tiles: the GEMMs' depth), and the largest
# image whose transforms it takes (beyond it, the shifted GEMMs, which need no such buffers).
WINOGRAD = True
_WINOGRAD_TILES = 128
_WINOGRAD_BYTES = 8 << 20



def _block() -> int:
    """MLAS's NCHWc channel block (16 with AVX-512, 8 with AVX2), or 0 where it has none."""
    if "block" not in ortkernels.state:
        from onnx import helper
        try:
            # ReorderInput pads 4 channels up to one block
            sess, _ = _session(("block", 1), lambda: (
                [helper.make_node("ReorderInput", ["X"], ["Y"], domain="com.microsoft.nchwc")], [("X", [1, 4, 1, 1])]))
            y = sess.run(None, {"X": np.ones((1, 4, 1, 1), np.float32)})[0]
            ortkernels.state["block"] = int(y.shape[1]) if y.shape[1] >= 8 else 0
        except Exception:       # no NCHWc kernels on this CPU or build: plain Conv nodes only
            ortkernels.state["block"] = 0
        ortkernels.sessions.pop(("block", 1), None)
    return ortkernels.state["block"]


# -- which calls come here ---------------------------------------------------------------------------

def plan(xshape, wshape, dtype, stride, dil, pads, groups):
    """The output size of conv(x, w) (x [N, C, H, W], w [O, C/groups, kh, kw]) when it runs here,
    else None: float32, 2-D, padding not negative, channel groups at least 8 wide, and large
    enough that a session run's overhead does not matter (small convolutions, like the digits
    CNN's, are bound by per-call overhead, where NumPy's kernels are faster)."""
    if len(xshape) != 4 or dtype != np.float32 or not ortkernels.enabled("conv"):
        return None
    if any(b < 0 or a < 0 for b, a in pads):
        return None
    N, C = xshape[:2]
    O = wshape[0]
    if groups > 1 and C // groups < 8:
        return None                        # depthwise and narrow groups: the NumPy kernels
    out_sp = tuple((S + b + a - d * (k - 1) - 1) // s + 1
                   for S, (b, a), d, k, s in zip(xshape[2:], pads, dil, wshape[2:], stride))
    if min(out_sp) < 1 or N * O * math.prod(out_sp) * (C // groups) * wshape[2] * wshape[3] < MIN_MACS:
        return None
    return out_sp


def _record(out, x, w, b, grad_x, grad_w):
    """Add the bias and record the primitive: grad_x(g) / grad_w(g) give the input and weight
    gradients; nothing is kept for the backward but x and w themselves."""
    from .tensor import _GRAD, _const, record
    if b is not None:
        out += b.data.reshape(1, -1, 1, 1)
    rx, rw, rb = x.requires_grad, w.requires_grad, b is not None and b.requires_grad
    if not ((rx or rw or rb) and _GRAD[0]):
        return _const(out)

    def vjp(g):
        return (grad_x(g) if rx else None, grad_w(g) if rw else None,
                g.sum(axis=(0, 2, 3)) if rb else None)
    return record(out, (x, w) if b is None else (x, w, b), vjp)


def conv(x, w, b, stride, dil, pads, groups, out_sp):
    """convolution.conv for a call `plan` accepted (x, w, b Tensors)."""
    xd, wd = x.data, w.data
    return _record(conv_forward(xd, wd, stride, dil, pads, groups, out_sp), x, w, b,
                   lambda g: conv_input_grad(g, wd, xd.shape, stride, dil, pads, groups),
                   lambda g: conv_weight_grad(xd, g, wd.shape, stride, dil, pads, groups))


def conv_transpose(x, w, b, stride, dil, pads, groups, out_shape):
    """convolution.conv_transpose for a call whose adjoint convolution `plan` accepted: it is that
    convolution's input gradient, and its gradients are the convolution and its weight gradient."""
    xd, wd = x.data, w.data
    return _record(conv_input_grad(xd, wd, out_shape, stride, dil, pads, groups), x, w, b,
                   lambda g: conv_forward(g, wd, stride, dil, pads, groups, xd.shape[2:]),
                   lambda g: conv_weight_grad(g, xd, wd.shape, stride, dil, pads, groups))


# -- the kernels --------------------------------------------------------------------------------------

def _blocked_filter(w, B, blocked_input):
    """w [O, C, kh, kw] in MLAS's NCHWc filter order, output channels zero-padded to B:
    [O/B, C/B, kh, kw, B(c), B(o)] when the input is blocked, else [O/B, C, kh, kw, B(o)]."""
    O, C, kh, kw = w.shape
    Op = -(-O // B) * B
    if blocked_input:
        out = np.zeros((Op // B, C // B, kh, kw, B, B), np.float32)
        out[:O // B] = w[:O // B * B].reshape(O // B, B, C // B, B, kh, kw).transpose(0, 2, 4, 5, 3, 1)
        if O % B:
            tail = np.zeros((B, C, kh, kw), np.float32)
            tail[:O % B] = w[O // B * B:]
            out[-1] = tail.reshape(B, C // B, B, kh, kw).transpose(1, 3, 4, 2, 0)
    else:
        out = np.zeros((Op // B, C, kh, kw, B), np.float32)
        wp = w if O == Op else np.concatenate([w, np.zeros((Op - O, C, kh, kw), np.float32)])
        out[...] = wp.reshape(Op // B, B, C, kh, kw).transpose(0, 2, 3, 4, 1)
    return out.reshape(Op, C, kh, kw)


def _conv(x, w, stride, dil, pads, groups, out_sp):
    """conv(x, w) [N, O, *out_sp] by ONNX Runtime: the NCHWc kernel where its blocks fit."""
    N, C = x.shape[:2]
    O, _, kh, kw = w.shape
    B = _block()
    onnx_pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    attrs = {"strides": list(stride), "dilations": list(dil), "pads": onnx_pads, "group": groups}
    x = np.ascontiguousarray(x)
    blocked_in = B and C % B == 0
    if B and groups == 1 and (blocked_in or C < B):
        key = ("nchwc", x.shape, w.shape, stride, dil, tuple(onnx_pads), _blas_threads())

        def build():
            from onnx import helper
            nodes, src = [], "X"
            if blocked_in:
                nodes.append(helper.make_node("ReorderInput", ["X"], ["Xb"], domain="com.microsoft.nchwc"))
                src = "Xb"
            nodes.append(helper.make_node("Conv", [src, "W"], ["Yb"], domain="com.microsoft.nchwc", **attrs))
            nodes.append(helper.make_node("ReorderOutput", ["Yb"], ["Y"], domain="com.microsoft.nchwc", channels=O))
            return nodes, [("X", list(x.shape)), ("W", None)]
        return _run(key, build, {"X": x, "W": _blocked_filter(w, B, blocked_in)}, (N, O) + tuple(out_sp))
    key = ("conv", x.shape, w.shape, stride, dil, tuple(onnx_pads), groups, _blas_threads())

    def build():
        from onnx import helper
        return [helper.make_node("Conv", ["X", "W"], ["Y"], **attrs)], [("X", list(x.shape)), ("W", list(w.shape))]
    return _run(key, build, {"X": x, "W": np.ascontiguousarray(w)}, (N, O) + tuple(out_sp))


def _by_images(N, out_shape, run_part):
    """An [N, ...] result of out_shape from run_part(images, out[images]) (images a slice):
    with n >= 2 BLAS threads in n parts of the batch on `parallel`'s workers (one-thread BLAS
    each, so the im2col copies and col2im adds between the GEMMs split too), else at once."""
    out = np.empty(out_shape, np.float32)
    n = min(_blas_threads(), N)
    if n < 2:
        run_part(slice(0, N), out)
    else:
        parts = ortkernels.row_parts(N, n)
        ortkernels.parallel(n, lambda i: run_part(parts[i], out[parts[i]]))
    return out


def conv_forward(x, w, stride, dil, pads, groups, out_sp):
    """conv(x, w) without bias: [N, O, *out_sp]. Small feature maps (fewer than MIN_POSITIONS
    outputs per image, e.g. 4x4) take im2col + one GEMM over the images, which beats the
    blocked kernel there; the im2col matrix is dropped at once, not kept for the backward."""
    if math.prod(out_sp) >= MIN_POSITIONS:
        return _conv(x, w, stride, dil, pads, groups, out_sp)
    O, Cg, kh, kw = w.shape
    G = groups
    w2 = w.reshape(G, O // G, Cg, kh * kw).transpose(0, 1, 3, 2).reshape(G, O // G, -1)

    def run_part(images, out):
        a, b = images.start, images.stop
        cols = _windows(x, a, b, (kh, kw), stride, dil, pads, G, out_sp)      # [G, n*P, kh*kw*Cg]
        y = np.matmul(cols, w2.transpose(0, 2, 1))                              # [G, n*P, O/G]
        out.reshape(b - a, G, O // G, -1)[...] = y.reshape(G, b - a, -1, O // G).transpose(1, 0, 3, 2)
    return _by_images(x.shape[0], (x.shape[0], O) + tuple(out_sp), run_part)


def conv_input_grad(g, w, xshape, stride, dil, pads, groups):
    """The gradient of conv(x, w) with respect to x [xshape] given the output gradient g."""
    k = w.shape[2:]
    if math.prod(g.shape[2:]) < MIN_POSITIONS:          # small maps: GEMM + col2im in NumPy
        def run_part(images, out):
            out[...] = _input_grad(g[images], w, None, (out.shape[0],) + tuple(xshape[1:]), stride, dil, pads,
                                   groups)
        return _by_images(g.shape[0], tuple(xshape), run_part)
    full = [d * (kk - 1) for d, kk in zip(dil, k)]
    if all(s == 1 for s in stride) and all(b <= f and a <= f for (b, a), f in zip(pads, full)):
        # a stride-1 convolution of g with each group's kernel flipped and its channels swapped
        O, Cg = w.shape[:2]
        G = groups
        wf = w.reshape((G, O // G, Cg) + k).swapaxes(1, 2)[..., ::-1, ::-1].reshape((G * Cg, O // G) + k)
        q = tuple((f - b, f - a) for (b, a), f in zip(pads, full))
        return _conv(g, np.ascontiguousarray(wf), (1, 1), dil, q, G, tuple(xshape[2:]))
    N, O = g.shape[:2]
    opad = [S + b + a - d * (kk - 1) - 1 - (o - 1) * s
            for S, (b, a), d, kk, o, s in zip(xshape[2:], pads, dil, k, g.shape[2:], stride)]
    attrs = {"strides": list(stride), "dilations": list(dil), "group": groups, "output_padding": opad,
             "pads": [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]}
    g = np.ascontiguousarray(g)
    key = ("convT", g.shape, w.shape, tuple(xshape), stride, dil, tuple(attrs["pads"]), groups, _blas_threads())

    def build():
        from onnx import helper
        return ([helper.make_node("ConvTranspose", ["X", "W"], ["Y"], **attrs)],
                [("X", list(g.shape)), ("W", list(w.shape))])
    return _run(key, build, {"X": g, "W": np.ascontiguousarray(w)}, tuple(xshape))


def _windows(x, n0, n1, k, stride, dil, pads, G, out_sp, buf=None):
    """im2col of images n0:n1 of x [N, C, H, W]: [G, (n1-n0)*P, kh*kw*C/G], (kh, kw, c) inner.
    `buf` [G, >= n1-n0, H+pads, W+pads, C/G], zero where padding, is reused when given."""
    N, C, H, W = x.shape
    (pt, pb), (pl, pr) = pads
    Cg = C // G
    nb = n1 - n0
    if buf is None:
        buf = np.zeros((G, nb, H + pt + pb, W + pl + pr, Cg), np.float32)
    xb = buf[:, :nb]
    xb[:, :, pt:pt + H, pl:pl + W] = x[n0:n1].reshape(nb, G, Cg, H, W).transpose(1, 0, 3, 4, 2)
    ext = tuple(d * (kk - 1) + 1 for d, kk in zip(dil, k))
    v = sliding_window_view(xb, ext, axis=(2, 3))         # [G, nb, Hp-e+1, Wp-e+1, Cg, eh, ew]
    v = v[:, :, :(out_sp[0] - 1) * stride[0] + 1:stride[0], :(out_sp[1] - 1) * stride[1] + 1:stride[1], :,
          ::dil[0], ::dil[1]]
    return v.transpose(0, 1, 2, 3, 5, 6, 4).reshape(G, nb * math.prod(out_sp), k[0] * k[1] * Cg)


def conv_weight_grad(x, g, wshape, stride, dil, pads, groups):
    """The gradient of conv(x, w) with respect to w [wshape] given the output gradient g, summed
    over blocks of a few images (each block's operands stay in cache). On maps of at least
    SHIFTED_POSITIONS outputs, dilation 1 and one group:
    * 3x3, stride 1, at least SHIFTED_CHANNELS input channels, with the compiled kernels and
      an image's transforms within _WINOGRAD_BYTES: Winograd F(3x3, 2x2)
      (`_weight_grad_winograd`);
    * otherwise stride 1, at least SHIFTED_CHANNELS input channels, padding below the kernel:
      kh*kw GEMMs on shifted slices of the padded image (`_weight_grad_shifted`, no im2col);
    * 1x1 kernels with a stride: one GEMM on the subsampled image (`_weight_grad_phases`; for
      3x3 stride-2 kernels its four phases' narrow GEMMs measured slower than im2col);
    * fewer input channels (a 3-channel stem): an im2col matrix built by whole-row copies and
      one GEMM (`_weight_grad_rows`), 2x as fast as im2col's C-element scatter.
    Otherwise im2col + GEMM (`_weight_grad_im2col`), accumulated in [G, Og, kh*kw*Cg].

    With n BLAS threads the images are split between n workers, each running its blocks with a
    one-thread BLAS: OpenBLAS splitting every one of these modest GEMMs between its own threads
    synchronises them per call, which measured up to 9x slower on a busy 2-core machine (a
    descheduled helper thread stalls each call)."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = wshape
    P = math.prod(g.shape[2:])
    direct = groups == 1 and P >= SHIFTED_POSITIONS and all(d == 1 for d in dil)
    Ho, Wo = g.shape[2:]
    tiles = -(-Ho // 2) * -(-Wo // 2)
    if direct and C >= SHIFTED_CHANNELS and (kh, kw) == (3, 3) and all(s == 1 for s in stride) and \
            _winograd_kernels() is not None and 64 * tiles * (O + C) <= _WINOGRAD_BYTES:
        step, part = -(-_WINOGRAD_TILES // tiles), _weight_grad_winograd
    elif direct and C >= SHIFTED_CHANNELS and all(s == 1 for s in stride) and \
            all(0 <= min(b, a) < k for (b, a), k in zip(pads, wshape[2:])):
        (pt, pb), (pl, pr) = pads
        step = max(1, _SHIFTED_BYTES // ((H + max(pt, pb)) * (W + max(pl, pr)) * C * 4))
        part = _weight_grad_shifted
    elif direct and (C < SHIFTED_CHANNELS or kh * kw == 1):
        grid = (Ho + (kh - 1) // stride[0]) * (Wo + (kw - 1) // stride[1])
        if C >= SHIFTED_CHANNELS:                     # 1x1, strided: one GEMM per phase read
            per_image, part = len(_phases(wshape, stride)) * grid * C * 4, _weight_grad_phases
        else:                                         # few channels (a stem): im2col by rows
            per_image, part = kh * kw * C * grid * 4, _weight_grad_rows
        step = max(1, _SHIFTED_BYTES // per_image)
    else:
        K = kh * kw * Cg
        step = max(1, min(N, max(_IM2COL_BYTES // (P * K * 4 * groups), -(-_IM2COL_ROWS // P))))
        part = _weight_grad_im2col
    threads = _blas_threads()
    if threads > 1:         # at least a block per thread (one block would run on one core)
        step = min(step, -(-N // threads))
    n = min(threads, -(-N // step))
    if n <= 1:
        acc = part(x, g, wshape, stride, dil, pads, groups, 0, N, step)
    else:
        bounds = [round(N * i / n) for i in range(n + 1)]
        parts = ortkernels.parallel(n, lambda i: part(x, g, wshape, stride, dil, pads, groups,
                                                      bounds[i], bounds[i + 1], step))
        acc = parts[0]
        for a in parts[1:]:
            acc += a
    if part is not _weight_grad_im2col:              # [kh, kw, O, C]
        return acc.transpose(2, 3, 0, 1).copy()
    return acc.reshape(O, kh, kw, Cg).transpose(0, 3, 1, 2).copy()


def _weight_grad_im2col(x, g, wshape, stride, dil, pads, G, n0, n1, step):
    """conv_weight_grad's sum over images n0:n1 by im2col + GEMM, [G, Og, kh*kw*Cg]."""
    _, C, H, W = x.shape
    O, Cg, kh, kw = wshape
    Og = O // G
    out_sp = g.shape[2:]
    P = math.prod(out_sp)
    (pt, pb), (pl, pr) = pads
    buf = np.zeros((G, min(step, n1 - n0), H + pt + pb, W + pl + pr, Cg), np.float32)
    acc = np.zeros((G, Og, kh * kw * Cg), np.float32)
    for a in range(n0, n1, step):
        b = min(n1, a + step)
        cols = _windows(x, a, b, (kh, kw), stride, dil, pads, G, out_sp, buf)
        gT = g[a:b].reshape(b - a, G, Og, P).transpose(1, 2, 0, 3).reshape(G, Og, (b - a) * P)
        acc += np.matmul(gT, cols)
    return acc


def _weight_grad_shifted(x, g, wshape, stride, dil, pads, groups, n0, n1, step):
    """conv_weight_grad's sum over images n0:n1 for stride 1, dilation 1, one group, as
    [kh, kw, O, C]: kh*kw GEMMs g [O, L] @ x [L, C], each on a shifted slice of one buffer.

    The images lie channels-last in one flat buffer of rows W + z wide (z = the widest side
    padding) and images H + z' rows apart (z' = the tallest), zero outside the data, after a
    lead of zeros; g lies on the same grid, zero where no output is. Then the input under tap
    (i, j) of every output position is the buffer shifted by i*(W+z) + j: a row that runs off
    one side reads the zeros shared with the next row or image, which stand for the padding.
    The GEMMs read the image kh*kw times from cache instead of writing an im2col matrix
    kh*kw times its size, at the price of the few zero positions in g."""
    _, C, H, W = x.shape
    O, _, kh, kw = wshape
    (pt, pb), (pl, pr) = pads
    Ho, Wo = g.shape[2:]
    Wr, Hb = W + max(pl, pr), H + max(pt, pb)      # row width, rows per image (Ho <= Hb, Wo <= Wr)
    lead = pt * Wr + pl
    nb = min(step, n1 - n0)
    L = nb * Hb * Wr
    xbuf = np.zeros((lead + L + (kh - 1) * Wr + kw, C), np.float32)
    gbuf = np.zeros((O, L), np.float32)
    acc = np.zeros((kh, kw, O, C), np.float32)
    tmp = np.empty((O, C), np.float32)
    for a in range(n0, n1, step):
        b = min(n1, a + step)
        m = b - a
        Lm = m * Hb * Wr
        xbuf[lead:lead + Lm].reshape(m, Hb, Wr, C)[:, :H, :W] = x[a:b].transpose(0, 2, 3, 1)
        gbuf[:, :Lm].reshape(O, m, Hb, Wr)[:, :, :Ho, :Wo] = g[a:b].transpose(1, 0, 2, 3)
        for i in range(kh):
            for j in range(kw):
                s = i * Wr + j
                np.matmul(gbuf[:, :Lm], xbuf[s:s + Lm], out=tmp)
                acc[i, j] += tmp
    return acc


def _winograd_kernels():
    """jitkernels when the Winograd weight gradient may run (WINOGRAD, numba present), else None."""
    from . import jit
    return jit.kernels() if WINOGRAD else None


# Winograd F(3x3, 2x2)'s output transform A^T (rows: kernel taps 0..2; columns: the 4 points)
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, 0], [0, 1, 1, 1]], np.float32)


def _weight_grad_winograd(x, g, wshape, stride, dil, pads, groups, n0, n1, step):
    """conv_weight_grad's sum over images n0:n1 for a 3x3 kernel, stride 1, as [3, 3, O, C], by
    Winograd F(3x3, 2x2): the weight gradient is the correlation of the padded image with g, a
    3x3 output from a 2x2 "kernel" g tile over each 4x4 input tile (stride 2). Per tile the
    input transform B^T d B and the gradient transform G y G^T give 16 values each; the 16
    products are summed over tiles by 16 GEMMs [O, tiles] x [tiles, C] (16 multiplies per tile
    and channel pair instead of 36), and A^T M A once at the end gives the 3x3 taps.
    ResNet-18's 3x3 weight gradients at batch 64, one thread (bench/kernels.md): 54 -> 42 ms at
    32x32 with 64 channels, 49 -> 35 at 16x16, 48 -> 37 at 8x8 (torch's oneDNN: 43, 33, 34);
    the transforms are compiled kernels (jitkernels), the GEMMs NumPy's."""
    jk = _winograd_kernels()
    _, C, H, W = x.shape
    O = wshape[0]
    (pt, _), (pl, _) = pads
    Ho, Wo = g.shape[2:]
    TY, TX = -(-Ho // 2), -(-Wo // 2)
    nb = min(step, n1 - n0)
    xp = np.zeros((nb, 2 * TY + 2, 2 * TX + 2, C), np.float32)     # zero where padding
    e = np.empty((4, 2 * TX + 2, C), np.float32)
    s = np.empty((4, TY, 2 * TX), np.float32)
    gp = None if Ho % 2 == 0 and Wo % 2 == 0 else np.zeros((nb, O, 2 * TY, 2 * TX), np.float32)
    V = np.empty((16, nb * TY * TX, C), np.float32)
    U = np.empty((16, O, nb * TY * TX), np.float32)
    M = np.zeros((16, O, C), np.float32)
    prod = np.empty((16, O, C), np.float32)
    for a in range(n0, n1, step):
        b = min(n1, a + step)
        m = b - a
        Tm = m * TY * TX
        xp[:m, pt:pt + H, pl:pl + W] = x[a:b].transpose(0, 2, 3, 1)
        jk.winograd_input(xp[:m], V, e, TY, TX)
        if gp is None:
            gm = np.ascontiguousarray(g[a:b])
        else:
            gp[:m, :, :Ho, :Wo] = g[a:b]
            gm = gp[:m]
        jk.winograd_grad(gm, U, s, TY, TX)
        np.matmul(U[:, :, :Tm], V[:, :Tm], out=prod)
        M += prod
    M = M.reshape(4, 4, O, C)
    R = np.tensordot(_WINOGRAD_AT, M, axes=(1, 0))                  # [3 (i), 4, O, C]
    return np.moveaxis(np.tensordot(R, _WINOGRAD_AT, axes=(1, 1)), -1, 1)   # [3 (i), 3 (j), O, C]


def _phases(wshape, stride):
    """The phases (row, column offsets modulo the stride) that some kernel tap reads."""
    kh, kw = wshape[2:]
    return sorted({(i % stride[0], j % stride[1]) for i in range(kh) for j in range(kw)})


def _span(r, s, pad, n, grid):
    """Phase r's grid points k < grid (input index s*k + r - pad) that fall inside 0..n-1:
    (first k, its input index, how many)."""
    k0 = max(0, -(-(pad - r) // s))
    k1 = min(grid, (n - 1 + pad - r) // s + 1)
    return k0, s * k0 + r - pad, max(0, k1 - k0)


class _PhaseGrid:
    """A strided convolution's padded input split into stride[0]*stride[1] phases, phase
    (ri, rj) holding the padded image's rows ri, ri+sh, ... and columns rj, rj+sw, ...: then
    tap (i, j) of every output position (ho, wo) reads phase (i % sh, j % sw) at
    (ho + i // sh, wo + j // sw), a stride-1 shift. Each phase of a block of images lies flat,
    images Hb rows of Wr apart (Hb = Ho + (kh-1)//sh, Wr = Wo + (kw-1)//sw), zero where the
    padding is, so tap (i, j) is the buffer shifted by (i // sh) * Wr + j // sw; the output
    gradient lies on the same grid, zero where no output is (a row or image that runs on
    meets only those zeros)."""

    def __init__(self, x, g, wshape, stride, pads, images, channels_last):
        _, self.C, H, W = x.shape
        self.kh, self.kw = wshape[2:]
        self.stride = stride
        self.Ho, self.Wo = g.shape[2:]
        self.Hb, self.Wr = self.Ho + (self.kh - 1) // stride[0], self.Wo + (self.kw - 1) // stride[1]
        self.channels_last = channels_last
        self.phases = _phases(wshape, stride)
        L = images * self.Hb * self.Wr + (self.kh - 1) // stride[0] * self.Wr + (self.kw - 1) // stride[1]
        shape = (L, self.C) if channels_last else (self.C, L)
        self.bufs = {r: np.zeros(shape, np.float32) for r in self.phases}
        self.spans = {r: (_span(r[0], stride[0], pads[0][0], H, self.Hb), _span(r[1], stride[1], pads[1][0], W, self.Wr))
                      for r in self.phases}
        self.gbuf = np.zeros((wshape[0], images * self.Hb * self.Wr), np.float32)

    def fill(self, x, g, a, b):
        """Lay images a:b of x and g into the buffers; the length of their grid."""
        m = b - a
        Lm = m * self.Hb * self.Wr
        sh, sw = self.stride
        for r, ((k0, y0, nk), (l0, x0, nl)) in self.spans.items():
            if not (nk and nl):
                continue
            src = x[a:b, :, y0:y0 + sh * (nk - 1) + 1:sh, x0:x0 + sw * (nl - 1) + 1:sw]
            if self.channels_last:
                self.bufs[r][:Lm].reshape(m, self.Hb, self.Wr, self.C)[:, k0:k0 + nk, l0:l0 + nl] = \
                    src.transpose(0, 2, 3, 1)
            else:
                self.bufs[r][:, :Lm].reshape(self.C, m, self.Hb, self.Wr)[:, :, k0:k0 + nk, l0:l0 + nl] = \
                    src.transpose(1, 0, 2, 3)
        self.gbuf[:, :Lm].reshape(-1, m, self.Hb, self.Wr)[:, :, :self.Ho, :self.Wo] = g[a:b].transpose(1, 0, 2, 3)
        return Lm

    def taps(self):
        """(i, j, phase buffer, shift) per kernel tap."""
        sh, sw = self.stride
        return [(i, j, self.bufs[(i % sh, j % sw)], i // sh * self.Wr + j // sw)
                for i in range(self.kh) for j in range(self.kw)]


def _weight_grad_phases(x, g, wshape, stride, dil, pads, groups, n0, n1, step):
    """conv_weight_grad's sum over images n0:n1 for dilation 1 and one group, as [kh, kw, O, C]:
    kh*kw GEMMs g [O, L] @ x [L, C] on shifted slices of _PhaseGrid's channels-last phases (no
    im2col matrix; for stride 1 `_weight_grad_shifted` packs rows tighter)."""
    O, C, kh, kw = wshape
    grid = _PhaseGrid(x, g, wshape, stride, pads, min(step, n1 - n0), channels_last=True)
    acc = np.zeros((kh, kw, O, C), np.float32)
    tmp = np.empty((O, C), np.float32)
    for a in range(n0, n1, step):
        Lm = grid.fill(x, g, a, min(n1, a + step))
        for i, j, buf, s in grid.taps():
            np.matmul(grid.gbuf[:, :Lm], buf[s:s + Lm], out=tmp)
            acc[i, j] += tmp
    return acc


def _weight_grad_rows(x, g, wshape, stride, dil, pads, groups, n0, n1, step):
    """conv_weight_grad's sum over images n0:n1 for few input channels (a stem's 3), as
    [kh, kw, O, C]: per-tap GEMMs C wide would waste the GEMM kernel, so the phases lie
    channels-first and each tap's shifted slice is C contiguous rows of an im2col matrix
    [C*kh*kw, L] (row copies, not a scatter of C-element runs); then one GEMM g [O, L] @ cols^T."""
    O, C, kh, kw = wshape
    grid = _PhaseGrid(x, g, wshape, stride, pads, min(step, n1 - n0), channels_last=False)
    cols = np.empty((C, kh, kw, grid.gbuf.shape[1]), np.float32)
    acc = np.zeros((O, C * kh * kw), np.float32)
    for a in range(n0, n1, step):
        Lm = grid.fill(x, g, a, min(n1, a + step))
        for i, j, buf, s in grid.taps():
            cols[:, i, j, :Lm] = buf[:, s:s + Lm]
        acc += grid.gbuf[:, :Lm] @ cols[..., :Lm].reshape(C * kh * kw, Lm).T
    return acc.reshape(O, C, kh, kw).transpose(2, 3, 0, 1)
