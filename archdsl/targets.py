"""What a command acts on in a compiled file: a Target.

    target = spec.target()              # the file's default, or spec.target("Ring"), ...
    print(target.summary())             # every command works on any kind of target:
    target.render("net.svg")            #   summary, render, export, train, sample
    target.export("net.onnx")
    target.train("data.npz", "runs/x")

A file compiles to models and sections; a command acts on one *target*: a model (with its train
section, if it has one), the pair of models a gan section trains together, or a VAE (a model
whose train section names its `decoder`, another model sharing its weights: archdsl/vae.py).
Which one is decided once, here (`resolve`), for every command:

- a name that names a gan section: that pair;
- a name that names a VAE or its decoder: that VAE (export, summary and render act on the model
  named; train trains the VAE, sample decodes from the prior or reconstructs);
- a name that names a model: that model;
- no name: the pair of the file's (first) gan section when it has one, else the file's (first)
  VAE, else the file's default model: the last one, or for training the one the file's only
  train section names.

New kinds of multi-model sections add a Target class and a line in `resolve`; the CLI does not
change.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ArchError


class Target:
    kind = ""

    def __init__(self, spec, name: str):
        self.spec, self.name = spec, name

    def models(self) -> list:
        raise NotImplementedError

    def summary(self, dims: dict | None = None, batch: int = 1, explain: bool = False) -> str:
        raise NotImplementedError

    def summary_json(self, dims: dict | None = None, batch: int = 1) -> dict:
        raise NotImplementedError

    def render(self, path, rankdir: str = "TB", collapse: bool = False, unroll: int | None = None,
               receptive_field: str | None = None) -> Path:
        raise NotImplementedError

    def export_model(self, role: str | None = None):
        """The CompiledModel `export` writes."""
        raise NotImplementedError

    def export_weights(self, path, model) -> dict:
        """That model's weights from a checkpoint or weights file."""
        from .train.checkpoint import load_weights
        return load_weights(path, model.ir)

    def export(self, path, opset: int | None = None, seed: int = 0, weights: str | None = None,
               role: str | None = None, target: str | None = None, precision: str = "fp32",
               half_io: bool = False):
        """Write the ONNX file; returns (backends.onnx.deploy.Export, model). A portable float32
        file is streamed (about one weight in memory at a time: CompiledModel.save_onnx); a
        deployment target or half precision goes through CompiledModel.deploy."""
        model = self.export_model(role)
        w = self.export_weights(weights, model) if weights else None
        if target is None and precision == "fp32" and not half_io:
            from .backends.onnx.deploy import Export
            from .backends.onnx.export import DEFAULT_OPSET
            graph = model.save_onnx(path, opset=opset, seed=seed, weights=w)
            return Export(graph, DEFAULT_OPSET if opset is None else opset, None, "fp32"), model
        return model.deploy(path, opset=opset, seed=seed, weights=w, target=target, precision=precision,
                            half_io=half_io), model

    def export_torch(self, path, seed: int = 0, weights: str | None = None, role: str | None = None):
        """Write the model as a standalone PyTorch module (and its weights beside it, given a
        checkpoint); returns (files, model)."""
        from .backends.torch.lazy import require_torch
        require_torch("export --format torch")
        from .backends.torch.export import export_torch
        model = self.export_model(role)
        w = self.export_weights(weights, model) if weights else None
        return export_torch(model.ir, path, w, spec_file=str(self.spec.file or "")), model

    def train(self, data, run_dir, **options):
        raise NotImplementedError

    def not_distributable(self) -> str | None:
        """Why several processes cannot train it together (`train --nproc`), or None when they can."""
        return "--nproc trains a supervised model; a gan trains in one process"

    def describe_run(self, result, spec_file, run_dir: Path, model_arg: str | None) -> list[str]:
        """What `archdsl train` prints after a run: the result, the files written, what next."""
        raise NotImplementedError

    def sample(self, options) -> int:
        raise NotImplementedError


class ModelTarget(Target):
    """One model (its train section, if any, says how to train it)."""
    kind = "model"

    def __init__(self, spec, model):
        super().__init__(spec, model.name)
        self.model = model

    def models(self) -> list:
        return [self.model]

    def summary(self, dims=None, batch=1, explain=False) -> str:
        if explain:
            from .authoring.explain import explain_model
            return explain_model(self.model, dims=dims, batch=batch)
        from .summary import format_summary
        return format_summary(self.model.cost(dims=dims, batch=batch), self.model.ir) + "\n"

    def summary_json(self, dims=None, batch=1) -> dict:
        from .summary import summary_json
        return summary_json(self.model.cost(dims=dims, batch=batch), self.model.ir)

    def render(self, path, rankdir="TB", collapse=False, unroll=None, receptive_field=None) -> Path:
        if unroll is not None or receptive_field:
            from .authoring.views import render_special
            return render_special(self.model, path, unroll=unroll, receptive_field=receptive_field, rankdir=rankdir)
        return self.model.render(path, rankdir=rankdir, collapse=collapse)

    def export_model(self, role=None):
        if role is not None:
            raise ArchError(f"--{role} needs a spec with a gan section ({self.spec.file} has none for model "
                            f"{self.name})", hint="name the model to export with --model")
        return self.model

    def export_weights(self, path, model) -> dict:
        from .gan.checkpoint import load_member        # a member of a GAN checkpoint, or any checkpoint
        return load_member(path, model.ir)

    def train(self, data, run_dir, *, resume=None, init=None, quiet=False, threads=None, steps=None,
              overwrite=False, log=None, engine: str = "numpy", device=None, group=None, **overrides):
        from .train.config import config_for, section_for
        from .train.loop import train
        if section_for(self.spec, self.name) is None:
            pair = _gan_of(self.spec, self.name)
            if pair is not None:            # a gan member without a train section of its own: its pair
                self._gan = GanTarget(self.spec, pair)
                return self._gan.train(data, run_dir, resume=resume, init=init, quiet=quiet, threads=threads,
                                       steps=steps, overwrite=overwrite, log=log, engine=engine, device=device,
                                       group=group, **overrides)
        if steps is not None:
            raise ArchError("--steps counts generator updates of a gan; supervised training counts --epochs")
        config = None if resume else config_for(self.spec, self.name, **overrides)
        return train(self.model, data, config, run_dir=run_dir, resume=resume, init=init, quiet=quiet,
                     threads=threads, overwrite=overwrite, log=log, policy=_policy("model", engine, device, group),
                     **(overrides if resume else {}))

    def not_distributable(self) -> str | None:
        from .train.config import config_for, section_for
        if section_for(self.spec, self.name) is None:
            return Target.not_distributable(self)
        if config_for(self.spec, self.name).terms:
            return (f"--nproc trains a model whose loss is one built-in loss (cross_entropy, mse, ...); "
                    f"model {self.name}'s loss has named terms or expressions")
        return None

    def describe_run(self, result, spec_file, run_dir, model_arg):
        if getattr(self, "_gan", None) is not None:
            return self._gan.describe_run(result, spec_file, run_dir, model_arg)
        n, last = result.epochs_done, result.last
        parts = [f"trained {self.name}: {n} epoch{'s' if n != 1 else ''}, {result.steps} steps in {result.seconds:.1f}s"]
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if last.get(k) is not None:
                parts.append(f"{k} {100 * last[k]:.2f}%" if k.endswith("accuracy") else f"{k} {last[k]:.4f}")
        lines = [", ".join(parts)]
        wrote = [str(p) for p in (result.checkpoint, result.best) if p is not None]
        if wrote:
            lines.append(f"wrote {', '.join(wrote)}, {run_dir / 'metrics.jsonl'}")
            lines.append(f"export with: archdsl export {spec_file}{' --model ' + model_arg if model_arg else ''} "
                         f"--weights {result.best or result.checkpoint} -o {self.name.lower()}.onnx")
        return lines

    def sample(self, options) -> int:
        from .sample.command import sample_lm
        return sample_lm(options, self.spec, dict(getattr(options, "overrides", {}) or {}))


class GanTarget(Target):
    """A gan section: a generator and a discriminator trained against each other."""
    kind = "gan"

    def __init__(self, spec, pair):
        super().__init__(spec, pair.name)
        self.pair = pair

    def models(self) -> list:
        return [self.pair.generator, self.pair.discriminator]

    def summary(self, dims=None, batch=1, explain=False) -> str:
        if explain:
            from .authoring.explain import explain_model
            return "".join(explain_model(m, dims=dims, batch=batch) for m in self.models())
        return self.pair.summary(dims, batch) + "\n"

    def summary_json(self, dims=None, batch=1) -> dict:
        return self.pair.summary_json(dims, batch)

    def render(self, path, rankdir="TB", collapse=False, unroll=None, receptive_field=None) -> Path:
        if unroll is not None or receptive_field:
            raise ArchError(f"--unroll and --receptive-field draw one model; gan {self.name} has two",
                            hint=f"pick one with --model {self.pair.generator.name}")
        return self.pair.render(path, rankdir=rankdir, collapse=collapse)

    def export_model(self, role=None):
        if role not in (None, "generator", "discriminator"):
            raise ArchError(f"gan {self.name} has no model '{role}'", hint="--discriminator, or nothing for the generator")
        return self.pair.discriminator if role == "discriminator" else self.pair.generator

    def export_weights(self, path, model) -> dict:
        from .gan.checkpoint import load_member
        return load_member(path, model.ir)

    def train(self, data, run_dir, *, resume=None, init=None, quiet=False, threads=None, val_split=None,
              freeze=None, overwrite=False, log=None, engine: str = "numpy", device=None, group=None, **overrides):
        from .gan.loop import train_gan
        for flag, given in (("--val-split", val_split), ("--freeze", freeze), ("--init", init)):
            if given:
                raise ArchError(f"{flag} is not supported for a gan (it applies to supervised training)")
        return train_gan(self.pair, data, run_dir=run_dir, resume=resume, quiet=quiet, threads=threads,
                         overwrite=overwrite, log=log, policy=_policy("gan", engine, device, group), **overrides)

    def describe_run(self, result, spec_file, run_dir, model_arg):
        from .gan.loop import format_record
        pair, last = self.pair, result.last
        lines = [f"trained gan {pair.name} ({pair.generator.name} vs {pair.discriminator.name}): {result.steps} steps, "
                 f"{result.epochs_done} epoch{'s' if result.epochs_done != 1 else ''} in {result.seconds:.1f}s"
                 + (f"; last epoch {format_record(last)}" if last else "")]
        if result.checkpoint is not None:
            lines.append(f"wrote {run_dir / 'checkpoint.npz'}, {run_dir / 'generator.npz'}, "
                         f"{run_dir / 'discriminator.npz'}, {run_dir / 'metrics.jsonl'}")
            lines.append(f"sample with: archdsl sample {spec_file} --weights {run_dir / 'checkpoint.npz'} -n 64 "
                         f"-o samples.png")
            lines.append(f"export with: archdsl export {spec_file} --weights {run_dir / 'generator.npz'} -o "
                         f"{pair.generator.name.lower()}.onnx")
        return lines

    def sample(self, options) -> int:
        from .gan.sampling import sample_command
        return sample_command(options, self.pair)


class VaeTarget(ModelTarget):
    """A VAE: the model its train section trains and the decoder that shares its weights. The
    model acted on (summary, render, export) is the one the command named: the VAE by default."""
    kind = "vae"

    def __init__(self, spec, vae):
        super().__init__(spec, vae.focus)
        self.vae = vae

    def models(self) -> list:
        return [self.vae.model, self.vae.decoder]

    def export_weights(self, path, model) -> dict:
        from .sample.vae import vae_weights
        return vae_weights(self.vae, path, model)

    def train(self, data, run_dir, **options):
        self._trained = ModelTarget(self.spec, self.vae.model)
        return self._trained.train(data, run_dir, **options)

    def not_distributable(self) -> str | None:
        return ModelTarget(self.spec, self.vae.model).not_distributable()

    def describe_run(self, result, spec_file, run_dir, model_arg):
        lines = self._trained.describe_run(result, spec_file, run_dir, model_arg)
        ck = result.best or result.checkpoint
        if ck is not None:
            lines.append(f"sample with: archdsl sample {spec_file} --weights {ck} -n 64 -o prior.png "
                         f"(decoder {self.vae.decoder.name}; --reconstruct DATA.npz for reconstructions)")
        return lines

    def sample(self, options) -> int:
        from .sample.vae import sample_command
        return sample_command(options, self.vae)


def _policy(kind: str, engine: str, device, group):
    """The trainer factory of an engine: None for the NumPy engine (the default policies)."""
    if engine == "numpy":
        if device is not None:
            raise ArchError(f"--device {device} runs the PyTorch engine", hint="add --engine torch")
        return None
    from .backends.torch.lazy import require_torch
    require_torch("--engine torch")
    from .backends.torch.train import engine_policy
    return engine_policy(kind, device, group=group)


def _gan_of(spec, model_name: str):
    """The pair of the gan section `model_name` is the generator or discriminator of, or None."""
    from .gan.config import config_from_section
    for s in spec.sections.get("gan", []):
        cfg = config_from_section(spec.ns, s)
        if model_name in (cfg.generator, cfg.discriminator):
            return spec.gan(s.name)
    return None


def resolve(spec, name: str | None = None, overrides: dict | None = None, training: bool = False) -> Target:
    """The target `name` means in this spec (the module docstring has the rule)."""
    overrides = overrides or {}
    gans = spec.sections.get("gan", [])
    if any(s.name == name for s in gans) or (name is None and gans):
        if training and overrides:
            raise ArchError("--set is not supported for a gan; give the models' arguments in the gan section",
                            hint="e.g. generator = Generator(z=32)")
        return GanTarget(spec, _with(spec, overrides).gan(name))
    from .vae import find
    vae = find(spec, name, overrides)
    if vae is not None:
        return VaeTarget(spec, vae)
    trains = spec.sections.get("train", [])
    if name is None and training and len(trains) == 1:
        name = trains[0].name
    return ModelTarget(spec, spec.model(name, **overrides))


def _with(spec, overrides: dict):
    """The spec compiled again with `overrides` for every model that declares them (a gan's models
    take --set this way), or the spec itself."""
    if not overrides:
        return spec
    return type(spec)(spec.ns, overrides)
