"""`archdsl train`: train a spec's model on an .npz file, following its `train` section."""
from __future__ import annotations

from pathlib import Path

from ..cliargs import fraction, output_dir, positive_float, positive_int, seed


def cmd_train(args) -> int:
    from ..api import compile, parse_set
    from ..errors import ArchError
    from ..targets import resolve
    target = resolve(compile(Path(args.file)), args.model, parse_set(args.set), training=True)
    if args.engine == "numpy" and (args.nproc or 1) > 1:
        raise ArchError("--nproc runs several PyTorch processes", hint="add --engine torch")
    group = None
    if args.engine == "torch":
        from ..backends.torch import distributed
        if (args.nproc or 1) > 1 and not distributed.in_group():
            why = target.not_distributable()
            if why:
                raise ArchError(why, hint="drop --nproc (--device cuda trains it on a GPU)")
            return distributed.launch(args.nproc, distributed.without_nproc(args.argv))
        group = distributed.join(args.device)
    lead = group is None or group.rank == 0        # only the first process writes and prints
    try:
        result = target.train(args.data, args.output if lead else None, resume=args.resume, init=args.init,
                              overwrite=args.overwrite, quiet=args.quiet or not lead, log=None if lead else (lambda s: None),
                              threads=args.threads, epochs=args.epochs, steps=args.steps, batch=args.batch,
                              lr=args.lr, seed=args.seed, val_split=args.val_split, freeze=args.freeze or None,
                              engine=args.engine, device=args.device, group=group)
    except ArchError:
        if lead:
            raise
        return 1            # the first process reports the same error
    finally:
        if group is not None:
            distributed.leave(group)
    if result.interrupted:
        return 130
    if lead:
        for line in target.describe_run(result, args.file, Path(args.output), args.model):
            print(line)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a model on an .npz file (NumPy engine, or PyTorch)",
                       description="Train a model of an .arch spec following its `train` section "
                                   "(loss, optimizer, batch, epochs, metrics, ...); flags override it.")
    p.add_argument("file", help="an .arch spec with a train section for the model")
    p.add_argument("--model", "-m", help="which model of the file (default: the one with a train section)")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="override a model parameter")
    p.add_argument("--data", "-d", help="an .npz file with one array per model input and loss target "
                                        "(default with --resume: the checkpoint's data file)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", type=output_dir,
                   help="run directory: checkpoint.npz, best.npz (with validation), metrics.jsonl")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--steps", type=positive_int, help="gan: this many generator updates (instead of epochs)")
    p.add_argument("--batch", type=positive_int, help="examples per update (1 = online SGD)")
    p.add_argument("--lr", type=positive_float, help="base learning rate of the optimizer")
    p.add_argument("--seed", type=seed, help="seed for init, split, shuffling and dropout")
    p.add_argument("--val-split", type=fraction, dest="val_split", metavar="F",
                   help="hold out this fraction of the data for validation")
    p.add_argument("--freeze", action="append", metavar="NAME",
                   help="freeze a layer or block by name (repeatable)")
    p.add_argument("--init", metavar="CKPT", help="start from the weights of a checkpoint (names matched)")
    p.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint, bit for bit")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a RUN_DIR that is not empty, replacing the run files in it "
                        "(without it, such a directory is refused)")
    p.add_argument("--threads", type=positive_int, help="BLAS threads (1 is fastest for small networks)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (one line per epoch remains)")
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy",
                   help="numpy (default: archdsl's own engine) or torch (PyTorch: GPUs, several processes)")
    p.add_argument("--device", help="with --engine torch: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="with --engine torch: N processes on this machine, DistributedDataParallel (torchrun)")
    p.set_defaults(fn=cmd_train)
