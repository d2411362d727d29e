"""PyTorch modules with nn.LSTM, nn.RNN, nn.GRU and nn.Transformer's layers, written the way the
shipped mappings describe them (specs/lstm_lm.map, deep_lstm.map, bilstm_tagger.map,
elman_lm.map, transformer.map): imported, exported to ONNX and run on ONNX Runtime within 1e-4
of PyTorch, and written back for load_state_dict(strict=True)."""
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.interop import export_weights, parse_mapping
from archdsl.ops.positional import sinusoid_table
from archdsl.train.checkpoint import load_weights
from harness import ort_run

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


class TokenRNN(nn.Module):
    """Embedding -> a recurrent layer -> Linear, as lstm_lm, deep_lstm, bilstm_tagger, elman_lm."""

    def __init__(self, kind, vocab, embed, hidden, out, **kw):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        setattr(self, kind.lower(), getattr(nn, kind)(embed, hidden, batch_first=True, **kw))
        self.rnn_kind = kind.lower()
        self.fc = nn.Linear(hidden * (2 if kw.get("bidirectional") else 1), out)

    def forward(self, tokens):
        return self.fc(getattr(self, self.rnn_kind)(self.embedding(tokens))[0])


CASES = [  # spec, model, overrides, torch module
    ("lstm_lm.arch", "LstmLM", {}, lambda: TokenRNN("LSTM", 64, 32, 128, 64)),
    ("deep_lstm.arch", "DeepLSTM", {}, lambda: TokenRNN("LSTM", 64, 32, 128, 64, num_layers=3, dropout=0.2)),
    ("deep_lstm.arch", "DeepLSTMFused", {}, lambda: TokenRNN("LSTM", 64, 32, 128, 64, num_layers=3)),
    ("bilstm_tagger.arch", "BiLSTMTagger", {"vocab": 100}, lambda: TokenRNN("LSTM", 100, 64, 64, 17, bidirectional=True)),
    ("elman_lm.arch", "ElmanLM", {}, lambda: TokenRNN("RNN", 64, 32, 128, 64)),
]


@pytest.mark.parametrize("spec,model,kw,make", CASES, ids=[c[1] for c in CASES])
def test_recurrent_language_models(tmp_path, spec, model, kw, make):
    torch.manual_seed(0)
    m = make().eval()
    torch.save(m.state_dict(), tmp_path / "m.pt")
    net = archdsl.compile(SPECS / spec).model(model, **kw)
    w = load_weights(tmp_path / "m.pt", net.ir)
    x = np.random.default_rng(0).integers(0, 64, (2, 11)).astype(np.int64)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    out = net.ir.outputs[0].name
    np.testing.assert_allclose(ort_run(net.to_onnx(weights=w), {"tokens": x})[out], ref, atol=1e-4, rtol=1e-4)
    # and back: the same state dict, loaded strictly
    tensors, _ = export_weights(w, net.ir)
    fresh = make()
    fresh.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, strict=True)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_gru_through_a_mapping_given_in_python(tmp_path):
    """No shipped spec has a GRU; an inline mapping shows nn.GRU's names map as they are."""
    spec = archdsl.compile("""model GruTagger(vocab: int = 40, hidden: int = 24) {
      input tokens: i64[N, T]
      output y = tokens -> Embedding(vocab, 16) -> GRU(hidden, num_layers=2, bidirectional=true) -> Linear(5)
    }""")
    net = spec.model()
    mapping = parse_mapping('mapping GruTagger {\n "embedding.weight" -> "embedding_1.weight"\n'
                            ' "gru.*" -> "gru_1.*"\n "fc.*" -> "linear_1.*"\n}', "gru.map")
    torch.manual_seed(1)
    m = TokenRNN("GRU", 40, 16, 24, 5, num_layers=2, bidirectional=True).eval()
    from archdsl.interop import import_weights
    from archdsl.interop.sources import Source
    src = Source("<state dict>", "torch", {k: v.numpy() for k, v in m.state_dict().items()})
    w = import_weights(src, net.ir, mapping=mapping).weights
    x = np.random.default_rng(1).integers(0, 40, (3, 6)).astype(np.int64)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(net.to_onnx(weights=w), {"tokens": x})["y"], ref, atol=1e-4, rtol=1e-4)


class Seq2SeqTransformer(nn.Module):
    """What specs/transformer.map describes: one embedding for source, target and output, the
    sinusoidal positions, nn.Transformer's encoder and decoder layers (post-norm)."""

    def __init__(self, vocab, d, heads, ffn, layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, ffn, batch_first=True), layers,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(d, heads, ffn, batch_first=True), layers)

    def forward(self, src, tgt):
        pos = lambda t: torch.tensor(sinusoid_table(t, self.embedding.embedding_dim, "float32"))  # noqa: E731
        memory = self.encoder(self.embedding(src) + pos(src.shape[1]))
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        y = self.decoder(self.embedding(tgt) + pos(tgt.shape[1]), memory, tgt_mask=mask, tgt_is_causal=True)
        return y @ self.embedding.weight.T


def test_transformer_from_pytorch_layers(tmp_path):
    kw = dict(vocab=30, d=16, heads=2, ffn=32, layers=2)
    torch.manual_seed(2)
    m = Seq2SeqTransformer(kw["vocab"], kw["d"], kw["heads"], kw["ffn"], kw["layers"]).eval()
    torch.save(m.state_dict(), tmp_path / "t.pt")
    net = archdsl.compile(SPECS / "transformer.arch").model(**kw)
    w = load_weights(tmp_path / "t.pt", net.ir)
    rng = np.random.default_rng(2)
    src, tgt = rng.integers(0, 30, (2, 7)).astype(np.int64), rng.integers(0, 30, (2, 5)).astype(np.int64)
    with torch.no_grad():
        ref = m(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()
    got = ort_run(net.to_onnx(weights=w), {"src": src, "tgt": tgt})["logits"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    tensors, _ = export_weights(w, net.ir)
    fresh = Seq2SeqTransformer(kw["vocab"], kw["d"], kw["heads"], kw["ffn"], kw["layers"])
    fresh.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, strict=True)
