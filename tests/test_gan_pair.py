"""The gan section: settings, the pair check at compile time (and in `archdsl check`), summary,
drawing, and which model `export` picks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import archdsl
from archdsl.errors import ArchError, ArchErrors

ROOT = Path(__file__).resolve().parent.parent

PAIR = """
model G(z: int = 4, width: int = 8) {
  input noise: f32[N, z]
  output x = noise -> Linear(width) -> ReLU -> Linear(2)
}
model D {
  input x: f32[N, 2]
  output score = x -> Linear(8) -> LeakyReLU(0.2) -> Linear(1)
}
"""


def compile_gan(section: str, models: str = PAIR):
    return archdsl.compile(models + section)


def messages(exc) -> list[str]:
    errs = exc.errors if isinstance(exc, ArchErrors) else [exc]
    return [e.message for e in errs]


def test_defaults_and_settings():
    pair = compile_gan("gan P { generator = G  discriminator = D }").gan()
    cfg = pair.config
    assert (cfg.generator, cfg.discriminator) == ("G", "D")
    assert cfg.objective == "non_saturating" and cfg.d_steps == 1
    assert cfg.noise == {"dist": "normal", "size": 4}          # from the generator's input
    assert cfg.g_optimizer == {"name": "Adam", "lr": 2e-4, "betas": [0.5, 0.999]} == cfg.d_optimizer
    pair = compile_gan("""gan P { generator = G(z=3, width=16)  discriminator = D  noise = uniform(3)
        objective = least_squares  d_steps = 2  g_optimizer = Adam(lr=1e-3)  d_optimizer = SGD(lr=0.1, momentum=0.9)
        batch = 32  steps = 100  seed = 7  data = "pts" }""").gan()
    cfg = pair.config
    assert cfg.generator_args == {"z": 3, "width": 16}
    assert pair.generator.ir.inputs[0].type.shape[1] == 3
    assert cfg.noise == {"dist": "uniform", "size": 3} and cfg.objective == "least_squares"
    assert cfg.d_steps == 2 and cfg.batch == 32 and cfg.steps == 100 and cfg.seed == 7 and cfg.data == "pts"
    assert cfg.g_optimizer == {"name": "Adam", "lr": 1e-3, "betas": [0.5, 0.999]}
    assert cfg.d_optimizer == {"name": "SGD", "lr": 0.1, "momentum": 0.9}
    assert pair.noise_shape == (3,) and pair.sample_shape == (2,)


def test_pair_type_mismatch_names_both_models_and_both_types():
    with pytest.raises(ArchError) as e:
        compile_gan("gan P { generator = G  discriminator = D }", PAIR.replace("Linear(2)", "Linear(3)"))
    msg = e.value.message
    assert "generator G outputs x: f32[N, 3]" in msg and "discriminator D takes x: f32[N, 2]" in msg
    assert e.value.span is not None and e.value.span.line == PAIR.count("\n") + 1
    assert "make G's output type equal D's input type" in e.value.hint


def test_image_pair_mismatch_and_dtype():
    src = """
model G { input z: f32[N, 8, 1, 1]  output img = z -> ConvTranspose2d(1, 4) -> Tanh }
model D { input img: f32[N, 1, 8, 8]  output s = img -> Flatten -> Linear(1) }
gan P { generator = G  discriminator = D }"""
    with pytest.raises(ArchError, match=r"generator G outputs img: f32\[N, 1, 4, 4\], but discriminator D takes "
                                        r"img: f32\[N, 1, 8, 8\] \(dim 2: 4 vs 8\)"):
        archdsl.compile(src)
    ok = archdsl.compile(src.replace("ConvTranspose2d(1, 4)", "ConvTranspose2d(1, 4) "
                                     "-> ConvTranspose2d(1, 3, stride=2, padding=1, output_padding=1)"))
    assert ok.gan().sample_shape == (1, 8, 8) and ok.gan().noise_shape == (8, 1, 1)


@pytest.mark.parametrize("section, needle", [
    ("gan P { generator = G  discriminator = D  noise = normal(5) }",
     "noise normal(5) draws 5 values per sample, but generator G takes noise: f32[N, 4] (4 per sample)"),
    ("gan P { generator = G  discriminator = D  objective = minmax }", "unknown objective 'minmax'"),
    ("gan P { generator = G  discriminator = D  noise = gaussian(4) }", "unknown noise 'gaussian'"),
    ("gan P { generator = G  discriminator = D  noise = normal(4, 2) }", "takes one argument"),
    ("gan P { generator = G  discriminator = D  d_steps = 0 }", "d_steps must be >= 1"),
    ("gan P { generator = G  discriminator = D  g_optimizer = Adamm(lr=1e-3) }", "unknown optimizer 'Adamm'"),
    ("gan P { generator = G  discriminator = D  d_optimizer = Adam(lr=-1) }", "learning rate must be a positive"),
    ("gan P { generator = G  discriminator = D  d_optimizer = Adam(betas=(0.5, 2.0)) }", "betas must be in [0, 1)"),
    ("gan P { generator = G  discriminator = D  batch = 2.5 }", "batch must be an integer"),
    ("gan P { generator = G  discriminator = D  data = 3 }", "data names the array"),
    ("gan P { generator = G  discriminator = Dx }", "discriminator 'Dx' is not a model"),
    ("gan P { generator = G(depth=3)  discriminator = D }", "model G has no parameter 'depth'"),
    ("gan P { discriminator = D }", "gan P needs 'generator = ModelName'"),
    ("gan P { generator = G  discriminator = D  stepz = 3 }", "unknown gan setting 'stepz'"),
    ("gan P { generator = D  discriminator = G }", "discriminator G must output one score per sample"),
])
def test_setting_errors(section, needle):
    with pytest.raises((ArchError, ArchErrors)) as e:
        compile_gan(section)
    assert any(needle in m for m in messages(e.value)), messages(e.value)


def test_structural_errors():
    two_in = """
model G { input a: f32[N, 2]  input b: f32[N, 2]  output x = (a, b) -> Concat(axis=1) -> Linear(2) }
model D { input x: f32[N, 2]  output s = x -> Linear(1) }
gan P { generator = G  discriminator = D }"""
    with pytest.raises(ArchError, match=r"generator G and discriminator D must take the same conditions after "
                                        r"their first input; G takes b: f32\[N, 2\], D takes none"):
        archdsl.compile(two_in)     # a second input of G is a condition, which D must take too
    fixed_batch = """
model G { input z: f32[4, 2]  output x = z -> Linear(2) }
model D { input x: f32[N, 2]  output s = x -> Linear(1) }
gan P { generator = G  discriminator = D }"""
    with pytest.raises(ArchError, match=r"first dim must be the symbolic batch dim"):
        archdsl.compile(fixed_batch)
    int_noise = """
model G { input z: i64[N, 2]  output x = z -> Embedding(10, 2) -> Flatten -> Linear(2) }
model D { input x: f32[N, 2]  output s = x -> Linear(1) }
gan P { generator = G  discriminator = D }"""
    with pytest.raises(ArchError, match=r"noise is floating point"):
        archdsl.compile(int_noise)


def test_independent_errors_are_reported_together():
    with pytest.raises(ArchErrors) as e:
        compile_gan("gan P { generator = G  discriminator = D  noise = normal(5)  objective = minmax }",
                    PAIR.replace("Linear(2)", "Linear(3)"))
    ms = messages(e.value)
    assert len(ms) == 3
    assert any("objective" in m for m in ms) and any("noise normal(5)" in m for m in ms)
    assert any("generator G outputs" in m for m in ms)


def test_imported_models(tmp_path):
    (tmp_path / "nets.arch").write_text(PAIR)
    (tmp_path / "gan.arch").write_text('import "nets.arch"\ngan P { generator = G(width=4)  discriminator = D }\n')
    spec = archdsl.compile(tmp_path / "gan.arch")
    pair = spec.gan()
    assert pair.generator.param_count == 4 * 4 + 4 + 4 * 2 + 2
    assert spec.model().name == "G" and spec.model().param_count == pair.generator.param_count


def test_gan_lookup_by_section_or_member_name():
    spec = compile_gan("gan P { generator = G  discriminator = D }\ngan Q { generator = G(z=2)  discriminator = D }")
    assert spec.gan().name == "P" and spec.gan("Q").name == "Q" and spec.gan("D").name == "P"
    with pytest.raises(ArchError, match="no gan section named 'R'"):
        spec.gan("R")
    with pytest.raises(ArchError, match="has no gan section"):
        archdsl.compile(PAIR).gan()


def test_default_model_of_a_gan_spec_is_the_generator():
    spec = archdsl.compile(ROOT / "specs" / "gan_ring.arch")
    assert spec.model().name == "Generator"
    assert spec.model("Discriminator").name == "Discriminator"


def test_summary_shows_both_models():
    pair = archdsl.compile(ROOT / "specs" / "dcgan_digits.arch").gan()
    text = pair.summary()
    assert 'Model: "Generator"' in text and 'Model: "Discriminator"' in text
    g, d = pair.generator.param_count, pair.discriminator.param_count
    assert f"Pair params: {g + d:,} (generator {g:,}, discriminator {d:,})" in text
    assert "noise normal(32) -> noise: f32[N, 32, 1, 1]" in text
    js = pair.summary_json()
    assert js["gan"] == "Digits" and js["generator"]["total_params"] == g


def test_render_draws_both_models_and_the_generated_sample_edge(tmp_path):
    pair = archdsl.compile(ROOT / "specs" / "gan_ring.arch").gan()
    src = pair.to_dot().source
    assert "cluster_model0" in src and "cluster_model1" in src
    assert "generated f32[N, 2]" in src and "noise normal(16)" in src
    out = pair.render(tmp_path / "gan.dot")
    assert "generated f32[N, 2]" in out.read_text()


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "archdsl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_check_reports_the_pair_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text(PAIR.replace("Linear(2)", "Linear(3)") + "gan P { generator = G  discriminator = D }\n")
    p = run_cli("check", bad)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "generator G outputs x: f32[N, 3], but discriminator D takes x: f32[N, 2]" in p.stderr
    p = run_cli("check", "specs/gan_ring.arch", "specs/dcgan_digits.arch")
    assert p.returncode == 0, p.stderr
    assert "specs/gan_ring.arch: gan Ring  ok" in p.stdout and "specs/dcgan_digits.arch: gan Digits  ok" in p.stdout


def test_export_picks_the_generator_and_model_picks_the_discriminator(tmp_path):
    import onnx
    p = run_cli("export", "specs/gan_ring.arch", "-o", tmp_path / "g.onnx")
    assert p.returncode == 0, p.stderr
    assert "model Generator" in p.stdout
    assert onnx.load(tmp_path / "g.onnx").graph.input[0].name == "noise"
    p = run_cli("export", "specs/gan_ring.arch", "--model", "Discriminator", "-o", tmp_path / "d.onnx")
    assert p.returncode == 0, p.stderr
    assert [o.name for o in onnx.load(tmp_path / "d.onnx").graph.output] == ["score"]


def test_targets_summary_and_render_of_a_gan(tmp_path):
    from archdsl.targets import GanTarget, ModelTarget, resolve
    spec = archdsl.compile(ROOT / "specs" / "gan_ring.arch")
    target = resolve(spec)                                           # no name: the file's gan section
    assert isinstance(target, GanTarget) and target.name == "Ring"
    js = target.summary_json()
    assert js["generator"]["total_params"] + js["discriminator"]["total_params"] == 36_227
    assert 'Model: "Generator"' in target.summary() and 'Model: "Discriminator"' in target.summary()
    target.render(tmp_path / "ring.dot")
    assert "generated f32[N, 2]" in (tmp_path / "ring.dot").read_text()
    assert isinstance(resolve(spec, "Ring"), GanTarget)              # the section by name
    one = resolve(spec, "Generator")                                 # one model asked for by name
    assert isinstance(one, ModelTarget) and one.models()[0].name == "Generator"
    assert isinstance(resolve(archdsl.compile(ROOT / "specs" / "lenet5.arch")), ModelTarget)
    assert resolve(spec).export_model("discriminator").name == "Discriminator"
    with pytest.raises(ArchError, match="--discriminator needs a spec with a gan section"):
        resolve(archdsl.compile(ROOT / "specs" / "lenet5.arch")).export_model("discriminator")


def test_cli_summary_render_and_export_of_a_gan_spec(tmp_path):
    p = run_cli("summary", "specs/gan_ring.arch")
    assert p.returncode == 0, p.stderr
    assert 'Model: "Generator"' in p.stdout and 'Model: "Discriminator"' in p.stdout
    p = run_cli("render", "specs/gan_ring.arch", "-o", tmp_path / "ring.dot")
    assert p.returncode == 0, p.stderr
    assert "generated f32[N, 2]" in (tmp_path / "ring.dot").read_text()
    # export: the generator by default, the discriminator with the flag
    p = run_cli("export", "specs/gan_ring.arch", "-o", tmp_path / "g.onnx")
    assert p.returncode == 0 and "model Generator" in p.stdout and "18,946 parameters" in p.stdout, p.stdout
    p = run_cli("export", "specs/gan_ring.arch", "--discriminator", "-o", tmp_path / "d.onnx")
    assert p.returncode == 0 and "model Discriminator" in p.stdout, p.stdout
    import onnx
    assert [i.name for i in onnx.load(tmp_path / "g.onnx").graph.input] == ["noise"]
    assert [i.name for i in onnx.load(tmp_path / "d.onnx").graph.input] == ["point"]
    p = run_cli("export", "specs/lenet5.arch", "--discriminator", "-o", tmp_path / "x.onnx")
    assert p.returncode == 1 and "--discriminator needs a spec with a gan section" in p.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_model_hint_lists_the_gan_sections():
    p = run_cli("summary", "specs/gan_ring.arch", "--model", "Nope")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "models: Generator, Discriminator; gan sections: Ring" in p.stderr
    p = run_cli("summary", "specs/gan_ring.arch", "--model", "Rin")
    assert "did you mean 'Ring'?" in p.stderr
