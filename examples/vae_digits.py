"""Train specs/vae_digits.arch on scikit-learn's 8x8 digits and judge what it learned.

    python examples/vae_digits.py --out out/vae [--grid docs/vae_digits_prior.png]
                                  [--recon-grid docs/vae_digits_recon.png]

Steps, each an `archdsl` command run in this process (printed as it runs): the fixed 80/20
split of examples/train_digits.py, pixels in [0, 1], as OUT/digits_train.npz and
OUT/digits_test.npz; `archdsl train` (OUT/run/); on the 360 held-out digits, the VAE in inference
mode (z = mu): the reconstruction term (the Bernoulli negative log-likelihood, nats per digit),
the mean squared error per pixel and the KL term (nats per digit), computed here with NumPy from
the model's outputs; `archdsl sample` of 1,000 digits decoded from the prior N(0, I) on the NumPy
engine and on ONNX Runtime (the same digits within 1e-4); the digits classifier of
specs/digits_cnn.arch, trained by archdsl on the same training split, judges them; grids of 64
prior samples (OUT/vae_prior.png) and of 32 held-out digits, each row followed by its
reconstruction (OUT/vae_recon.png).

A class counts as generated when at least 1% of the 1,000 digits are assigned to it with
confidence > 0.9. Exits 1 unless all 10 classes are, and both runtimes give the same digits.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "vae_digits.arch"
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402


def held_out(vae_weights: dict, x: np.ndarray) -> dict:
    """The VAE in inference mode (z = mu) on digits x: reconstruction NLL and KL in nats per
    digit, squared error per pixel."""
    import archdsl
    model = archdsl.compile(SPEC).model("VAE")
    out = model.executor(vae_weights).run({"image": x})
    z, mu, logvar = out["logits"].astype(np.float64), out["mu"].astype(np.float64), out["logvar"].astype(np.float64)
    nll = (np.logaddexp(0.0, z) - x * z).reshape(len(x), -1).sum(1)
    kl = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum(1)
    return {"recon_nll": float(nll.mean()), "kl": float(kl.mean()),
            "mse": float(((out["recon"] - x) ** 2).mean()), "elbo": float(-(nll + kl).mean())}


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    _common.add_flags(ap, "epochs", "threads", "quiet", threads=_common.THREADS_SMALL_NET,
                      quiet="no progress bar or epoch lines")
    ap.add_argument("--grid", default=None, help="also write the grid of prior samples here")
    ap.add_argument("--recon-grid", default=None, help="also write the grid of reconstructions here")
    args = ap.parse_args(argv)

    from archdsl.train.checkpoint import load_weights
    from archdsl.train.run import blas_threads
    from dcgan_digits import judge, train_classifier
    from train_digits import digits_split

    out = _common.output_dir(args.out)
    xtr, ytr, xte, yte = digits_split(0)
    _common.save_npz(out / "digits_train.npz", image=xtr)
    _common.save_npz(out / "digits_test.npz", image=xte)
    print(f"digits: {len(xtr):,} for training, {len(xte):,} held out, pixels in [0, 1]")

    def cli(*cmd):
        _common.archdsl(*cmd, quiet=args.quiet)

    train = ["train", SPEC, "--data", out / "digits_train.npz", "-o", out / "run", "--threads", args.threads]
    cli(*train, *(["--epochs", args.epochs] if args.epochs else []), *(["--quiet"] if args.quiet else []))
    ck = out / "run" / "checkpoint.npz"
    with blas_threads(args.threads):
        import archdsl
        vae_w = load_weights(ck, archdsl.compile(SPEC).model("VAE").ir)
        test = held_out(vae_w, xte)
    print(f"held-out digits (z = mu): reconstruction {test['recon_nll']:.2f} nats per digit (squared error "
          f"{test['mse']:.4f} per pixel), KL {test['kl']:.2f} nats per digit, ELBO {test['elbo']:.2f}")

    cli("sample", SPEC, "--weights", ck, "-n", 1000, "-o", out / "prior_numpy.npy")
    cli("sample", SPEC, "--weights", ck, "-n", 1000, "-o", out / "prior_onnx.npy", "--device", "cpu")
    samples, on_ort = np.load(out / "prior_numpy.npy"), np.load(out / "prior_onnx.npy")
    diff = float(np.abs(samples - on_ort).max())
    cli("sample", SPEC, "--weights", ck, "-n", 64, "-o", out / "vae_prior.png")
    cli("sample", SPEC, "--weights", ck, "--reconstruct", out / "digits_test.npz", "-n", 32,
        "-o", out / "vae_recon.png")
    for src, dst in ((out / "vae_prior.png", args.grid), (out / "vae_recon.png", args.recon_grid)):
        if dst:
            Path(dst).write_bytes(src.read_bytes())

    with blas_threads(args.threads):
        clf, acc = train_classifier(out, args.threads)
        rep = judge(clf, samples * 2.0 - 1.0)          # judge() takes digits in [-1, 1]
        real = judge(clf, xte * 2.0 - 1.0)
    print(f"the judge (specs/digits_cnn.arch, {100 * acc:.2f}% on held-out real digits): {rep['classes']} of 10 "
          f"classes get >= 1% of 1,000 prior samples with confidence > 0.9; confident per class "
          f"{rep['confident_counts']}; {100 * rep['confident']:.1f}% confident overall (real digits: "
          f"{100 * real['confident']:.1f}%)")
    print(f"ONNX Runtime vs NumPy engine, same prior samples: max |difference| {diff:.2e}")
    report = {**test, **rep, "classifier_accuracy": acc, "real_confident": real["confident"], "onnx_max_diff": diff}
    return _common.finish(report, rep["classes"] == 10 and diff <= 1e-4,
                          "all 10 classes among confident prior samples and ONNX == NumPy within 1e-4")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
