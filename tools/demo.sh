#!/bin/sh
# The main job on bundled specs: check, summarize, draw, export to ONNX, run on ONNX Runtime, train.
set -e
VENV=${1:-.venv}
OUT=${2:-out}
A="$VENV/bin/archdsl"
PY="$VENV/bin/python"
mkdir -p "$OUT"
echo "== check every bundled spec"
"$A" check specs/*.arch
echo "== summary of ResNet-18"
"$A" summary specs/resnet18.arch
echo "== draw LeNet-5 and ResNet-18"
"$A" render specs/lenet5.arch -o "$OUT/lenet5.svg"
"$A" render specs/resnet18.arch -o "$OUT/resnet18.svg" --collapse
echo "== export LeNet-5 to ONNX and run it on ONNX Runtime"
"$A" export specs/lenet5.arch -o "$OUT/lenet5.onnx" --seed 0
"$PY" -c "import numpy as np; np.save('$OUT/digit.npy', np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype('float32'))"
"$A" run "$OUT/lenet5.onnx" --input image="$OUT/digit.npy" -o "$OUT/lenet5_out.npz"
if [ -f examples/train_digits.py ]; then
  echo "== train a CNN on scikit-learn's digits with the NumPy engine, export it, check it on ONNX Runtime"
  OPENBLAS_NUM_THREADS=1 "$PY" examples/train_digits.py --out "$OUT"
fi
echo "== done: see $OUT/"
