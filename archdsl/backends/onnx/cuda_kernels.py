"""Which versions of the ONNX ops archdsl emits ONNX Runtime's CUDA execution provider implements.

Source: docs/OperatorKernels.md of microsoft/onnxruntime ("Operators implemented by
CUDAExecutionProvider", domain ai.onnx), the version at commit 001d12d2623fd411ce0f83d05abb5e82304a3389
(it lists opset 23 kernels such as Attention, RMSNormalization and RotaryEmbedding), read on
2026-12-04. Only the ops archdsl's lowerings (and the sampler's device picker) emit are kept;
the float element types are those the table lists for the op's main type constraint. When
ONNX Runtime registers new kernels, update the rows from a newer OperatorKernels.md (and say so
here); tools/gpu_check.py shows on a real GPU where this table and the runtime disagree.

Each row is (first, last, types): a kernel for op versions first..last; last None marks a kernel
registered from `first` on without an end, which ONNX Runtime matches to a node of version
`first` only (onnxruntime/core/framework/kernel_registry.cc, VerifyVersion: "if it does not [have
an end version], all we know is that the kernel supported the start version when it was
created"). So MaxPool "12+" runs MaxPool-12 (opsets 12..21) but not MaxPool-22 (opset 22 on),
and an op missing here (Mish, GroupNormalization) has no CUDA kernel at all.

types: the float types among f32, f16, bf16; "any" where the op is not restricted to floats
(shape and data-movement ops, boolean ops, Cast).
"""
from __future__ import annotations

F = "f32 f16"
FB = "f32 f16 bf16"
ANY = "any"

CUDA: dict[str, tuple] = {
    "Abs": ((13, None, FB), (6, 12, F)),
    "Add": ((14, None, FB), (13, 13, FB), (7, 12, F)),
    "And": ((7, None, ANY),),
    "ArgMax": ((13, None, F), (12, 12, F), (1, 11, F)),
    "Attention": ((24, None, FB), (23, 23, FB)),
    "AveragePool": ((22, None, FB), (19, 21, F), (11, 18, F), (10, 10, F), (7, 9, F)),
    "BatchNormalization": ((15, None, F), (14, 14, F), (9, 13, F), (7, 8, F)),
    "Cast": ((23, None, ANY), (21, 22, ANY), (19, 20, ANY), (13, 18, ANY), (9, 12, ANY), (6, 8, ANY)),
    "Clip": ((13, None, F), (12, 12, F), (11, 11, "f32"), (6, 10, "f32")),
    "Concat": ((13, None, ANY), (11, 12, ANY), (4, 10, ANY)),
    "ConstantOfShape": ((9, None, ANY),),
    "Conv": ((22, None, FB), (11, 21, F), (1, 10, F)),
    "ConvTranspose": ((11, None, F), (1, 10, F)),
    "Cos": ((7, None, F),),
    "CumSum": ((14, None, F), (11, 13, "f32")),
    "DepthToSpace": ((13, None, F), (11, 12, F), (1, 10, F)),
    "Div": ((14, None, FB), (13, 13, FB), (7, 12, F)),
    "Dropout": ((13, None, FB), (12, 12, F), (10, 11, F), (7, 9, F)),
    "Einsum": ((12, None, F),),
    "Elu": ((6, None, F),),
    "Equal": ((13, None, F), (11, 12, F), (7, 10, ANY)),
    "Erf": ((13, None, FB), (9, 12, F)),
    "Exp": ((13, None, FB), (6, 12, F)),
    "Expand": ((13, None, ANY), (8, 12, ANY)),
    "Flatten": ((13, None, ANY), (11, 12, ANY), (9, 10, ANY), (1, 8, ANY)),
    "Gather": ((13, None, ANY), (11, 12, ANY), (1, 10, ANY)),
    "Gelu": ((20, None, FB),),
    "Gemm": ((13, None, FB), (11, 12, F), (9, 10, F), (7, 8, F)),
    "GlobalAveragePool": ((1, None, F),),
    "GlobalMaxPool": ((1, None, F),),
    "Greater": ((13, None, F), (9, 12, F), (7, 8, F)),
    "GreaterOrEqual": ((16, None, F), (12, 15, F)),
    "GRU": ((14, None, F), (7, 13, F)),
    "HardSigmoid": ((22, None, FB), (6, 21, F)),
    "HardSwish": ((22, None, FB), (14, 21, F)),
    "Identity": ((19, None, ANY), (14, 18, ANY), (13, 13, ANY), (1, 12, ANY)),
    "InstanceNormalization": ((6, None, F),),
    "LayerNormalization": ((17, None, FB),),
    "LeakyRelu": ((16, None, F), (6, 15, F)),
    "Less": ((13, None, F), (9, 12, F), (7, 8, F)),
    "LessOrEqual": ((16, None, F), (12, 15, F)),
    "Log": ((13, None, F), (6, 12, F)),
    "LogSoftmax": ((13, None, F), (11, 12, F), (1, 10, F)),
    "LRN": ((13, None, F), (1, 12, F)),
    "LSTM": ((14, None, F), (7, 13, F)),
    "MatMul": ((13, None, FB), (9, 12, F), (1, 8, F)),
    "Max": ((13, None, FB), (12, 12, FB), (6, 11, FB)),
    "MaxPool": ((12, None, F), (11, 11, F), (10, 10, F), (8, 9, F), (1, 7, F)),
    "Min": ((13, None, FB), (12, 12, FB), (6, 11, FB)),
    "Mul": ((14, None, FB), (13, 13, FB), (7, 12, F)),
    "Neg": ((13, None, FB), (6, 12, F)),
    "Not": ((1, None, ANY),),
    "Or": ((7, None, ANY),),
    "Pad": ((18, None, F), (13, 17, F), (11, 12, F), (2, 10, F)),
    "Pow": ((15, None, FB), (13, 14, FB), (12, 12, F), (7, 11, F)),
    "PRelu": ((16, None, F), (9, 15, F), (7, 8, F)),
    "RandomNormalLike": ((1, None, F),),
    "RandomUniformLike": ((1, None, F),),
    "Range": ((11, None, "f32"),),
    "Reciprocal": ((13, None, F), (6, 12, F)),
    "ReduceMax": ((18, None, F), (1, 17, F)),
    "ReduceMean": ((18, None, F), (1, 17, F)),
    "ReduceMin": ((18, None, F), (1, 17, F)),
    "ReduceSum": ((13, None, FB), (1, 12, F)),
    "Relu": ((14, None, FB), (13, 13, FB), (6, 12, F)),
    # onnxruntime/core/providers/cuda/controlflow/scan.cc registers Scan 8, 9-10 and 11 (no end),
    # not the Scan-16 of opsets 16+: a scanned cell's Scan node (and its body) runs on the CPU
    "Scan": ((11, None, ANY), (9, 10, ANY), (8, 8, ANY)),
    "Reshape": ((23, None, ANY), (21, 22, ANY), (19, 20, ANY), (14, 18, ANY), (13, 13, ANY), (5, 12, ANY),
                (1, 4, ANY)),
    "Resize": ((19, None, F), (18, 18, F), (13, 17, F), (11, 12, F), (10, 10, F)),
    "RMSNormalization": ((23, None, FB),),
    "RNN": ((14, None, F), (7, 13, F)),
    "RotaryEmbedding": ((23, None, FB),),
    "Shape": ((23, None, ANY), (21, 22, ANY), (19, 20, ANY), (15, 18, ANY), (13, 14, ANY), (1, 12, ANY)),
    "Sigmoid": ((13, None, FB), (6, 12, F)),
    "Sin": ((7, None, F),),
    "Size": ((13, None, ANY), (1, 12, ANY)),
    "Slice": ((13, None, ANY), (11, 12, ANY), (10, 10, ANY), (1, 9, ANY)),
    "Softmax": ((13, None, FB), (11, 12, F), (1, 10, F)),
    "Softplus": ((1, None, F),),
    "Softsign": ((1, None, F),),
    "SpaceToDepth": ((13, None, F), (1, 12, F)),
    "Split": ((18, None, ANY), (13, 17, ANY), (11, 12, ANY), (2, 10, ANY)),
    "Sqrt": ((13, None, FB), (6, 12, F)),
    "Squeeze": ((23, None, ANY), (21, 22, ANY), (13, 20, ANY), (11, 12, ANY), (1, 10, ANY)),
    "Sub": ((14, None, FB), (13, 13, FB), (7, 12, F)),
    "Tanh": ((13, None, FB), (6, 12, F)),
    "Tile": ((13, None, FB), (6, 12, F)),
    "TopK": ((11, None, F), (10, 10, F), (1, 9, F)),
    "Transpose": ((23, None, ANY), (21, 22, ANY), (13, 20, ANY), (1, 12, ANY)),
    "Trilu": ((14, None, ANY),),
    "Unsqueeze": ((23, None, ANY), (21, 22, ANY), (13, 20, ANY), (11, 12, ANY), (1, 10, ANY)),
    "Where": ((16, None, FB), (9, 15, F)),
}

# Inputs the CUDA kernels read from host memory (their KernelDef's InputMemoryType CPUInput): a
# Shape output may feed them without dragging the consumer onto the CPU. Outputs the kernels
# write to host memory: Shape's and Size's.
HOST_INPUTS: dict[str, tuple] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Range": (0, 1, 2),
    "ConstantOfShape": (0,), "Unsqueeze": (1,), "Squeeze": (1,), "Split": (1,), "Pad": (1, 2, 3),
    "Resize": (1, 2, 3), "CumSum": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,),
    "ReduceMin": (1,), "TopK": (1,), "Dropout": (1, 2), "Trilu": (1,),
}
HOST_OUTPUTS: dict[str, tuple] = {"Shape": (0,), "Size": (0,)}
