"""Train a character-level GPT (specs/gpt_char.arch) with `archdsl train` on the corpus of
examples/char_lm.py (docstrings of Python's standard library), compare its perplexity with the
LSTM language model (specs/lstm_lm.arch) at equal parameter count, and sample from it with
`archdsl sample` on the NumPy engine and on ONNX Runtime.

    python examples/gpt_char.py --out out/gpt_char                 # trains both models
    python examples/gpt_char.py --out out/gpt_char --lstm-run out/char_lm/run
                                                     # reuse the LSTM run of examples/char_lm.py

The data are exactly examples/char_lm.py's (its `corpus`, `windows` and vocabulary: windows of
64 characters, `tokens` and `next` in OUT/chars_train.npz, every 10th docstring held out as test
text), and both models are trained by `archdsl train` with the same epochs (10),
validation split (10%, seed 0) and gradient clipping; each keeps its own optimizer settings
(the LSTM: Adam 3e-3, batch 32; the GPT: AdamW 4e-3 with warm-up and a cosine decay, batch 16).
Parameter counts come from the compiled models: GPTChar's defaults (d 64, 2 layers, 4 heads,
FFN 225, sinusoidal positions over a context of 64, output tied to the embedding) have 98,242
parameters at 96 characters, the LSTM LM (embedding 32, hidden 128) 98,400.

Figures: validation perplexity (exp of the best epoch's val_loss: mean nats per character over
the validation windows) and test perplexity (the held-out docstrings, windows of 64, NumPy
engine; the GPT also on ONNX Runtime), for both models, and whether the GPT beats the LSTM or
by how much it falls short. Exits 1 unless the GPT's test perplexity is below 60% of the
unigram baseline's, ONNX Runtime agrees with NumPy, and both sampling engines give the same
text (the GPT-vs-LSTM outcome is reported, not asserted).

    archdsl train specs/gpt_char.arch --data OUT/chars_train.npz -o OUT/gpt_run --set vocab=96
    archdsl sample specs/gpt_char.arch --weights OUT/gpt_run/best.npz --prompt "Return the " \\
        --length 300 --temperature 0.7 [--device cpu]
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for char_lm and _common

import _common  # noqa: E402
import char_lm  # noqa: E402  (the corpus and helpers of the LSTM example: the same data)

GPT_SPEC = ROOT / "specs" / "gpt_char.arch"
LSTM_SPEC = ROOT / "specs" / "lstm_lm.arch"


def train_cli(spec: Path, data: Path, run: Path, sets: list[str], args, extra=()) -> float:
    cmd = ["train", str(spec), "--data", str(data), "-o", str(run), "--overwrite", "--threads", str(args.threads), *extra]
    for s in sets:
        cmd += ["--set", s]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.quiet:
        cmd += ["--quiet"]
    _common.show_command(cmd, flush=True)
    (code, stdout, stderr), seconds = _common.timed(_common.run_cli, cmd)
    sys.stdout.write(stdout)
    if code != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"archdsl train {spec.name} failed")
    return seconds


def best_val_loss(run: Path) -> tuple[float, int]:
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(history, key=lambda h: h["val_loss"])
    return best["val_loss"], len(history)


def test_perplexity(run_fn, xt: np.ndarray, yt: np.ndarray, chunk: int = 256) -> float:
    logits = np.concatenate([run_fn(xt[i:i + chunk]) for i in range(0, len(xt), chunk)])
    return math.exp(char_lm.cross_entropy(logits, yt))


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--lstm-run", metavar="DIR", help="reuse this LSTM run directory (from examples/char_lm.py "
                                                      "on the same corpus) instead of training the LSTM here")
    ap.add_argument("--no-lstm", action="store_true", help="train and evaluate the GPT only (no comparison)")
    ap.add_argument("--epochs", type=int, default=None, help="override both train sections' epochs")
    ap.add_argument("--batch", type=int, default=None, help="override the GPT's batch size")
    ap.add_argument("--lr", type=float, default=None, help="override the GPT's learning rate")
    _common.add_flags(ap, "limit")
    ap.add_argument("--set", action="append", default=[], metavar="K=V",
                    help="override a GPTChar parameter (e.g. d=48); the parameter counts are reported")
    _common.add_flags(ap, "threads")
    ap.add_argument("--sample-length", type=int, default=300)
    _common.add_flags(ap, "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train.checkpoint import load_weights

    out = _common.output_dir(args.out)
    seq = 64
    x, y, xt, yt, chars, train_text, test_text = char_lm.char_data(args.limit, seq)
    V = len(chars)
    data = out / "chars_train.npz"
    _common.save_npz(data, tokens=x, next=y, vocab=np.array(chars))
    digest = hashlib.sha256((train_text + test_text).encode()).hexdigest()[:12]
    print(f"corpus (examples/char_lm.py): {len(train_text):,} training + {len(test_text):,} test characters, "
          f"{V} distinct (sha256 {digest}); {len(x):,} training windows of {seq}, {len(xt):,} test windows")

    gpt_sets = [f"vocab={V}", f"ctx={seq}", *args.set]
    gpt = archdsl.compile(GPT_SPEC).model(**archdsl.api.parse_set(gpt_sets))
    lstm = archdsl.compile(LSTM_SPEC).model(vocab=V)
    print(f"parameters: GPTChar {gpt.param_count:,}, LstmLM {lstm.param_count:,} "
          f"({100 * (gpt.param_count / lstm.param_count - 1):+.2f}%)")

    # -- training (archdsl train) -----------------------------------------------------------
    gpt_run = out / "gpt_run"
    extra = (["--batch", str(args.batch)] if args.batch else []) + (["--lr", str(args.lr)] if args.lr else [])
    gpt_s = train_cli(GPT_SPEC, data, gpt_run, gpt_sets, args, extra)
    lstm_s = None
    if args.no_lstm:
        lstm_run = None
    elif args.lstm_run:
        lstm_run = Path(args.lstm_run)
        print(f"reusing the LSTM run {lstm_run}")
    else:
        lstm_run = out / "lstm_run"
        lstm_s = train_cli(LSTM_SPEC, data, lstm_run, [f"vocab={V}"], args)

    # -- perplexities ---------------------------------------------------------------------------
    from archdsl.train.data import Dataset, split
    train_part, val = split(Dataset({"tokens": x, "next": y}), 0.1, 0)       # the loop's split
    logp = char_lm.unigram_logprobs(train_part.arrays["next"].ravel(), V)
    uni_val = math.exp(-logp[val.arrays["next"]].mean())
    uni_test = math.exp(-logp[yt].mean())
    res = {}
    for name, model, run in (("gpt", gpt, gpt_run), ("lstm", lstm, lstm_run)):
        if run is None:
            continue
        vl, epochs = best_val_loss(run)
        w = load_weights(run / "best.npz", model.ir)
        ex = model.executor(w)
        res[name] = {"params": model.param_count, "val_perplexity": math.exp(vl), "epochs": epochs,
                     "test_perplexity": test_perplexity(lambda a: ex.run({"tokens": a})["logits"], xt, yt),
                     "weights": w}
    onnx_path = out / "gpt_char.onnx"
    gpt.to_onnx(onnx_path, weights=res["gpt"]["weights"])
    from archdsl.runtime import Session
    sess = Session(onnx_path, device="cpu")
    res["gpt"]["onnx_test_perplexity"] = test_perplexity(lambda a: sess.run({"tokens": a})["logits"], xt, yt)
    g, lm = res["gpt"], res.get("lstm")
    print(f"trained GPTChar in {gpt_s:.0f}s" + (f", LstmLM in {lstm_s:.0f}s" if lstm_s else ""))
    print(f"validation perplexity: GPTChar {g['val_perplexity']:.3f}"
          + (f", LstmLM {lm['val_perplexity']:.3f}" if lm else "") + f" (unigram {uni_val:.2f})")
    print(f"test perplexity:       GPTChar {g['test_perplexity']:.3f} (ONNX Runtime {g['onnx_test_perplexity']:.3f})"
          + (f", LstmLM {lm['test_perplexity']:.3f}" if lm else "") + f" (unigram {uni_test:.2f})")
    rel, verdict = None, None
    if lm:
        rel = g["val_perplexity"] / lm["val_perplexity"] - 1
        verdict = (f"GPTChar beats LstmLM by {100 * -rel:.1f}% in validation perplexity" if rel < 0 else
                   f"GPTChar falls short of LstmLM by {100 * rel:.1f}% in validation perplexity")
        print(f"{verdict} ({g['params']:,} vs {lm['params']:,} parameters)")

    # -- archdsl sample -------------------------------------------------------------------------
    samples, error = _common.sample_on_both(GPT_SPEC, gpt_run / "best.npz", args.sample_length, args.set)
    if error is not None:
        return {"ok": False, "error": error}
    same = samples["numpy"] == samples["cpu"]

    report = {"vocab": V, "unigram_val_perplexity": uni_val, "unigram_test_perplexity": uni_test,
              "verdict": verdict, "relative_val_perplexity": rel, "samples": samples, "same_samples": same,
              **{f"{m}_{k}": v for m in res for k, v in res[m].items() if k != "weights"}}
    ok = bool(g["test_perplexity"] < 0.6 * uni_test and same
              and abs(g["test_perplexity"] - g["onnx_test_perplexity"]) < 1e-3 * g["test_perplexity"])
    return _common.finish(report, ok, "the GPT's test perplexity below 60% of the unigram's, ONNX Runtime to agree "
                                      "and both engines to sample the same text")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
