"""Train specs/gan_ring.arch on a mixture of 8 Gaussians on a ring and count the modes it covers.

    python examples/gan_ring.py --out out/ring

Steps: 100,000 real points (8 modes evenly spaced on a circle of radius 2, standard deviation
0.02 each; seed 0) written as OUT/ring.npz; the alternating GAN loop on the NumPy engine with
the spec's gan section (OUT/run/: checkpoint.npz, generator.npz, metrics.jsonl); 2,000 samples
from the trained generator (noise seed 0) on the NumPy engine and on ONNX Runtime (the generator
exported to OUT/generator.onnx); the mode count; a scatter plot OUT/ring_samples.png.

A sample belongs to a mode when it lies within 3 standard deviations (0.06) of the mode's
centre. Exits 1 unless all 8 modes each get at least 5% of the samples, at least 80% of the
samples belong to a mode, and both runtimes give the same samples (1e-4).

    python examples/gan_ring.py --out out/ring --seeds 10

trains 10 runs instead, each on a fresh draw of the data (data seed 100 + s) with seed s, and
prints the table of modes covered per seed (the README's); it exits 1 unless at least 9 of the
10 runs cover all 8 modes with at least 80% of their samples in a mode.

The CLI does the same:

    archdsl train specs/gan_ring.arch --data OUT/ring.npz -o OUT/run
    archdsl sample specs/gan_ring.arch --weights OUT/run/checkpoint.npz -n 2000 -o samples.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "gan_ring.arch"
MODES, RADIUS, SIGMA = 8, 2.0, 0.02
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402


def centres() -> np.ndarray:
    a = 2 * np.pi * np.arange(MODES) / MODES
    return np.stack([RADIUS * np.cos(a), RADIUS * np.sin(a)], axis=1)


def ring_data(n: int = 100_000, seed: int = 0) -> np.ndarray:
    """n points [n, 2] (float32) from the 8-Gaussian ring."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, MODES, n)
    return (centres()[k] + SIGMA * rng.standard_normal((n, 2))).astype(np.float32)


def mode_report(samples: np.ndarray) -> dict:
    """Per-mode counts of samples within 3 sigma of its centre, and the fraction in no mode."""
    d = np.linalg.norm(samples[:, None, :].astype(np.float64) - centres()[None], axis=2)
    near = d.argmin(axis=1)
    good = d.min(axis=1) <= 3 * SIGMA
    counts = np.bincount(near[good], minlength=MODES)
    n = len(samples)
    covered = int((counts >= 0.05 * n).sum())
    return {"counts": counts.tolist(), "modes_covered": covered, "outside": float(1 - good.mean()),
            "ok": covered == MODES and float(good.mean()) >= 0.80}


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--steps", type=int, default=None, help="override the spec's steps")
    ap.add_argument("--seeds", type=int, default=None, metavar="K",
                    help="train K runs (fresh data and seed each) and print the modes per seed")
    _common.add_flags(ap, "seed", "threads", "quiet", threads=_common.THREADS_SMALL_NET,
                      quiet="no progress bar or epoch lines")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.gan import train_gan
    from archdsl.gan.image import scatter, write_png

    out = _common.output_dir(args.out)
    if args.seeds:
        return seed_table(args, out)
    data = ring_data()
    np.savez(out / "ring.npz", point=data)
    print(f"ring: {len(data):,} real points, {MODES} modes on a circle of radius {RADIUS}, sigma {SIGMA}")

    pair = archdsl.compile(SPEC).gan()
    result, train_s = _common.timed(train_gan, pair, out / "ring.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, steps=args.steps, seed=args.seed,
                                    log=(lambda s: None) if args.quiet else None)
    cfg = result.config
    print(f"trained in {train_s:.1f}s: {result.steps} steps of batch {cfg.batch} "
          f"({result.steps / train_s:.0f} steps/s, {cfg.d_steps} D + 1 G update each)")

    onnx_path = out / "generator.onnx"
    np_samples, _, info, diff = _common.generator_on_both(pair, result.generator_weights, onnx_path, 2000,
                                                          args.threads)
    rep = mode_report(np_samples)
    write_png(out / "ring_samples.png", scatter(np_samples, lim=1.25 * RADIUS))
    print(f"2,000 samples: {rep['modes_covered']} of {MODES} modes get >= 5% (100) of them within 3 sigma; "
          f"per mode {rep['counts']}; {100 * rep['outside']:.1f}% in no mode")
    print(f"ONNX Runtime ({info['device']}) vs NumPy engine, same noise: max |difference| {diff:.2e}")
    print(f"wrote {out / 'ring_samples.png'}, {onnx_path}")
    report = {**rep, "train_seconds": train_s, "steps": result.steps, "onnx_max_diff": diff,
              "history": result.history}
    return _common.finish(report, rep["ok"] and diff <= 1e-4,
                          "all 8 modes with >= 5% each, >= 80% of samples in a mode, ONNX == NumPy within 1e-4")


def seed_table(args, out: Path) -> dict:
    """K runs, each on a fresh draw of the data with its own seed: modes covered per seed."""
    import archdsl
    from archdsl.gan import generate, train_gan
    rows = []
    print("| seed | modes covered | samples in a mode | samples per mode (of 2,000) |")
    print("|---|---|---|---|")
    for s in range(args.seeds):
        pair = archdsl.compile(SPEC).gan()
        result = train_gan(pair, {"point": ring_data(seed=100 + s)}, seed=s, steps=args.steps, quiet=True,
                           log=lambda m: None, threads=args.threads)
        samples, _ = generate(pair, result.generator_weights, n=2000, seed=s)
        rep = mode_report(samples)
        rows.append({"seed": s, **rep})
        print(f"| {s} | {rep['modes_covered']} of {MODES} | {100 * (1 - rep['outside']):.1f}% | "
              f"{', '.join(map(str, rep['counts']))} |", flush=True)
    good = sum(r["ok"] for r in rows)
    print(f"{good} of {len(rows)} runs cover all {MODES} modes with >= 80% of their samples in a mode")
    return _common.finish({"runs": rows, "good_runs": good}, good >= 0.9 * len(rows),
                          "at least 9 of 10 runs with all 8 modes and >= 80% of samples in a mode")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
