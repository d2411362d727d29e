"""GAN checkpoints: both models and both optimizer states in one `.npz`, through the training
stack's checkpoint I/O (archdsl/train/checkpoint.py: atomic writes, no pickles, JSON metadata).

    param/generator/<name>        every parameter and buffer of G, by its IR name
    param/discriminator/<name>    the same for D
    optim/generator/<slot>/<name>, optim/discriminator/<slot>/<name>   Adam's m and v, SGD's momentum
    __meta__                      {"kind": "gan", "gan": section name, "generator": G's model name,
                                   "discriminator": D's, "step", "epoch", RNG states, both optimizers'
                                   meta, the run's config, history, ...}

Beside checkpoint.npz a run writes generator.npz and discriminator.npz: plain `name -> array`
files (also atomic), which `archdsl export SPEC --weights run/generator.npz` and every other
weights reader accept as they are. `load_member` reads either kind for one model of the pair.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArchError
from ..fileio import atomic_path
from ..train.checkpoint import Checkpoint, check_weights, read_checkpoint, save_checkpoint

ROLES = ("generator", "discriminator")


def save_gan_checkpoint(path, weights: dict[str, dict], optim: dict[str, dict], meta: dict) -> Path:
    """weights/optim: role -> {name: array}. Written atomically."""
    flat_w = {f"{role}/{k}": v for role in ROLES for k, v in weights[role].items()}
    flat_o = {f"{role}/{k}": v for role in ROLES for k, v in optim[role].items()}
    return save_checkpoint(path, flat_w, flat_o, {"kind": "gan", **meta})


def save_weights(path, weights: dict[str, np.ndarray]) -> Path:
    """A plain weights file (name -> array), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **weights)
    return path


def is_gan(ck: Checkpoint) -> bool:
    return ck.meta.get("kind") == "gan"


def split(ck: Checkpoint) -> tuple[dict[str, dict], dict[str, dict]]:
    """(weights, optim), each role -> {name: array}."""
    w = {r: {} for r in ROLES}
    o = {r: {} for r in ROLES}
    for src, dst in ((ck.weights, w), (ck.optim, o)):
        for k, a in src.items():
            role, _, name = k.partition("/")
            if role not in dst:
                raise ArchError(f"'{ck.path}': unexpected array '{k}' in a GAN checkpoint")
            dst[role][name] = a
    return w, o


def read_gan_checkpoint(path) -> tuple[Checkpoint, dict[str, dict], dict[str, dict]]:
    from ..train.metaschema import check_meta, gan_schema
    from ..train.run import upgrade_meta
    ck = read_checkpoint(path)
    if not is_gan(ck):
        raise ArchError(f"'{ck.path}' is not a GAN checkpoint",
                        hint="a GAN run writes run/checkpoint.npz (both models); "
                             "plain weights go with --weights where one model is needed")
    ck.meta = upgrade_meta(ck.meta)                  # version 1 wrote the old layout (train/run.py)
    check_meta(ck.meta, gan_schema(), ck.path)       # before --resume uses a field
    w, o = split(ck)
    return ck, w, o


def load_member(path, model, role: str | None = None) -> dict[str, np.ndarray]:
    """The weights of `model` (an IR Model) from a GAN checkpoint (the member `role`, or the one
    whose model name matches), or from a plain weights file / an ordinary checkpoint."""
    ck = read_checkpoint(path, model)
    if not is_gan(ck):
        return check_weights(ck.weights, model, ck.path)
    w, _ = split(ck)
    if role is None:
        role = next((r for r in ROLES if ck.meta.get(r) == model.name), None)
        if role is None:
            raise ArchError(f"'{ck.path}' is a checkpoint of gan {ck.meta.get('gan')} "
                            f"({ck.meta.get('generator')} and {ck.meta.get('discriminator')}), not of model {model.name}")
    return check_weights(w[role], model, f"{ck.path} ({role})")
