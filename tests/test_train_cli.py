"""`archdsl train` end to end, in a subprocess as a user runs it: files written, export of the
trained weights, user errors without tracebacks, Ctrl-C saving a checkpoint, --resume."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archdsl.cli import main
from harness import run_archdsl as run
from harness import toy_workdir

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
model Net(classes: int = 3) {
  input x: f32[N, 8]
  h = x -> Linear(32, name="fc1") -> ReLU
  output logits = h -> Linear(classes, name="head")
}

train Net {
  loss      = cross_entropy(logits, label)
  optimizer = SGD(lr=0.1, momentum=0.9)
  batch     = 16
  epochs    = 3
  metrics   = [accuracy]
  val_split = 0.25
  seed      = 0
}
"""


@pytest.fixture()
def work(tmp_path):
    return toy_workdir(tmp_path, SPEC)


def test_train_export_summary(work, capsys):
    p = run("train", work / "net.arch", "--data", work / "data.npz", "-o", work / "run", "--epochs", "2",
            "--lr", "0.05", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "epoch 1/2" in p.stdout and "epoch 2/2" in p.stdout and "val_accuracy" in p.stdout
    assert "trained Net: 2 epochs" in p.stdout
    for f in ("checkpoint.npz", "best.npz", "metrics.jsonl"):
        assert (work / "run" / f).exists(), f
    rows = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["lr"] == 0.05
    assert main(["export", str(work / "net.arch"), "--weights", str(work / "run" / "checkpoint.npz"),
                 "-o", str(work / "net.onnx")]) == 0
    assert "trained weights" in capsys.readouterr().out and (work / "net.onnx").exists()

    frozen = work / "frozen.arch"
    frozen.write_text(SPEC.replace("  seed      = 0\n", "  seed      = 0\n  freeze    = [fc1]\n"))
    assert main(["summary", str(frozen)]) == 0
    assert "Non-trainable params: 288" in capsys.readouterr().out   # fc1: 32*8 + 32

    p = run("train", work / "net.arch", "--data", work / "data.npz", "-o", work / "tl", "--epochs", "1",
            "--init", work / "run" / "best.npz", "--freeze", "fc1", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "initialised 4 of 4 parameters" in p.stdout and "frozen: 2 parameter tensors" in p.stdout


@pytest.mark.parametrize("args, message", [
    (["--data", "{w}/data.npz", "--freeze", "fc3"], "cannot freeze 'fc3'"),
    (["--data", "{w}/bad.npz"], "no array 'label' for the loss target 'label'"),
    (["--data", "{w}/missing.npz"], "no data file"),
    ([], "no training data"),
    (["--data", "{w}/data.npz", "--resume", "{w}/nope.npz"], "no checkpoint file"),
])
def test_user_errors_exit_1(work, capsys, args, message):
    # in-process: main() prints ArchErrors and returns 1; anything else would raise here
    np.savez(work / "bad.npz", x=np.zeros((4, 8), np.float32), labels=np.zeros(4, np.int64))
    assert main(["train", str(work / "net.arch"), *[a.format(w=work) for a in args], "-o", str(work / "run")]) == 1
    assert message in capsys.readouterr().err


def test_bad_flags_and_missing_section(work, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", str(work / "net.arch"), "--batch", "0", "-o", str(work / "run")])
    assert e.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
    (work / "plain.arch").write_text(SPEC.split("train Net")[0])
    assert main(["train", str(work / "plain.arch"), "--data", str(work / "data.npz"), "-o", str(work / "run")]) == 1
    err = capsys.readouterr().err
    assert "has no train section" in err and "hint: add one" in err
    p = run("train", work / "plain.arch", "--data", work / "data.npz", "-o", work / "run")   # as a user sees it
    assert p.returncode == 1 and "has no train section" in p.stderr


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(work):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 8)).astype(np.float32)
    np.savez(work / "big.npz", x=x, label=x[:, :3].argmax(1))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "archdsl", "train", str(work / "net.arch"), "--data",
                             str(work / "big.npz"), "-o", str(work / "run"), "--epochs", "500", "--batch", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        line = proc.stdout.readline()             # the first epoch line: training is under way
        assert line.startswith("epoch"), line + proc.stderr.read()
        proc.send_signal(signal.SIGINT)           # mid-way through epoch 2 of 500
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at epoch" in out
    from archdsl.train import read_checkpoint
    ck = read_checkpoint(work / "run" / "checkpoint.npz")
    assert ck.meta["step"] > 0 and ck.meta["epoch"] >= 1
    p = run("train", work / "net.arch", "--resume", work / "run", "--epochs", str(ck.meta["epoch"] + 1),
            "-o", work / "run", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "resuming Net" in p.stdout and f"trained Net: {ck.meta['epoch'] + 1} epoch" in p.stdout


def _weights(path):
    from archdsl.train import read_checkpoint
    ck = read_checkpoint(path)
    return ck.meta, ck.weights


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_chosen_moments_then_resume_gives_the_uninterrupted_weights(work, seed):
    """A run SIGKILLed three times (after a step, in the middle of a checkpoint write, after a
    later step), and resumed each time from its last checkpoint, ends with exactly the weights of
    a run that was never interrupted. The moments are drawn from a fixed seed and reached by
    progress (ARCHDSL_CRASH_AT, archdsl/crashpoints.py), never by a clock, so the test behaves
    the same on any machine."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    np.savez(work / "mid.npz", x=x, label=x[:, :3].argmax(1))
    epochs, steps_per_epoch = 12, 29              # 450 training rows (val_split 0.25), batch 16
    base = ["train", str(work / "net.arch"), "--data", str(work / "mid.npz"), "--epochs", str(epochs), "--quiet"]
    p = run(*base, "-o", work / "full")
    assert p.returncode == 0, p.stderr
    meta_full, w_full = _weights(work / "full" / "checkpoint.npz")
    assert meta_full["step"] == epochs * steps_per_epoch

    pick = np.random.default_rng(seed)
    first = int(pick.integers(steps_per_epoch + 1, 5 * steps_per_epoch))       # mid-epoch, after a checkpoint
    third = int(pick.integers(7 * steps_per_epoch, epochs * steps_per_epoch))
    kills = [f"step:{first}", f"checkpoint:{int(pick.integers(1, 3))}", f"step:{third}"]
    run_dir = work / "killed"
    for at in kills:
        args = base + ["-o", str(run_dir)] + (["--resume", str(run_dir)] if (run_dir / "checkpoint.npz").exists() else [])
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "ARCHDSL_CRASH_AT": at}
        p = subprocess.run([sys.executable, "-m", "archdsl", *args], capture_output=True, text=True, cwd=ROOT,
                           env=env, timeout=300)
        assert p.returncode == -signal.SIGKILL, (at, p.returncode, p.stderr)
        meta, _ = _weights(run_dir / "checkpoint.npz")     # the checkpoint is whole after every kill
        assert 1 <= meta["epoch"] < epochs
        if at.startswith("step:"):                          # the last checkpoint is the last epoch's end
            assert meta["step"] == (int(at[5:]) // steps_per_epoch) * steps_per_epoch
    p = run(*base, "-o", run_dir, "--resume", run_dir)
    assert p.returncode == 0, p.stderr
    meta_kill, w_kill = _weights(run_dir / "checkpoint.npz")
    assert meta_kill["epoch"] == meta_full["epoch"] == epochs and meta_kill["step"] == meta_full["step"]
    assert w_full.keys() == w_kill.keys()
    for k in w_full:
        assert np.array_equal(w_full[k], w_kill[k]), k         # bit for bit
