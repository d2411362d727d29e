"""Every shipped spec checks, summarizes with the published figures, and renders."""
from pathlib import Path

import pytest

import archdsl

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.arch"))
MODEL_SPECS = [p for p in SPECS if "model " in p.read_text()]

# Published figures (torchvision / the original papers / SmolLM-135M); MACs at 224x224, batch 1.
PUBLISHED = {
    "lenet5": (61_706, None),
    "alexnet": (61_100_840, 0.71e9),
    "vgg16": (138_357_544, 15.5e9),
    "resnet18": (11_689_512, 1.82e9),
    "resnet50": (25_557_032, 4.1e9),
    "mobilenet_v2": (3_504_872, 0.30e9),
    "efficientnet_b0": (5_288_548, 0.39e9),
    "densenet121": (7_978_856, 2.83e9),
    "convnext_t": (28_589_128, 4.46e9),
    "swin_t": (28_288_354, 4.49e9),
    "vit_b16": (86_567_656, 17.56e9),
    "unet": (31_030_658, None),          # the paper's network (1 input channel, 2 classes)
    "llama": (134_515_008, None),        # SmolLM-135M's shape: tied head
}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_checks(path):
    archdsl.compile(path)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts_and_macs(name):
    m = archdsl.compile(f"specs/{name}.arch").model()
    params, macs = PUBLISHED[name]
    report = m.cost()
    assert report.total_params == params
    assert report.trainable_params == params
    if macs is not None:
        assert abs(report.macs - macs) / macs < 0.02, report.macs


def test_lenet5_layer_by_layer():
    report = archdsl.compile("specs/lenet5.arch").model().cost()
    per_layer = [r.params for r in report.rows if r.params]
    assert per_layer == [156, 2416, 48120, 10164, 850]


def test_textcnn_max_over_time_and_concat():
    ir = archdsl.compile("specs/textcnn.arch").model().ir
    assert str(ir.outputs[0].type) == "f32[N, 2]"
    concat = next(n for n in ir.nodes if n.kind == "Concat")
    assert str(concat.outputs[0].type) == "f32[N, 300]"
    convs = [n for n in ir.nodes if n.kind == "Conv1d"]
    assert [str(c.outputs[0].type) for c in convs] == ["f32[N, 100, T-2]", "f32[N, 100, T-3]", "f32[N, 100, T-4]"]


@pytest.mark.parametrize("path", MODEL_SPECS, ids=lambda p: p.stem)
def test_summary_and_render_every_spec(path, tmp_path):
    spec = archdsl.compile(path)
    for m in spec.models():
        text = m.summary()
        assert f"Total params: {m.param_count:,}" in text
        out = m.render(tmp_path / f"{m.name}.svg")
        assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_readme_parameter_table_matches_the_specs():
    """The README's table of bundled specs quotes each spec's parameter count."""
    import re
    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    rows = re.findall(r"^\| `(\w+)\.arch` \| [^|]+ \| ([\d,]+)", readme, flags=re.M)
    assert len(rows) >= 7
    for stem, count in rows:
        spec = archdsl.compile(f"specs/{stem}.arch")
        assert spec.model().param_count == int(count.replace(",", "")), stem
