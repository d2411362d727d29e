"""Weights in and out: other frameworks' checkpoints (safetensors, PyTorch, Hugging Face folders,
ONNX initializers) read into an archdsl model's parameter names through declarative mappings
(specs/NAME.map beside specs/NAME.arch), and written back for the source framework.

    from archdsl.interop import import_weights, export_weights
    imp = import_weights("gpt2/", model.ir)              # strict: errors name both sides
    tensors, section = export_weights(imp.weights, model.ir)

`archdsl.train.checkpoint` reads every weights file through here, so `--weights` and `--init`
take these formats directly; `archdsl import-weights` / `export-weights` are the commands.
"""
from .mapping import IDENTITY, MappingFile, Section, find_mapping, load_mapping, parse_mapping
from .sources import Source, is_foreign, read_source
from .verify import VerifyReport, load_source, source_module, verify
from .weights import Imported, export_weights, import_weights, save_exported

__all__ = ["IDENTITY", "Imported", "MappingFile", "Section", "Source", "VerifyReport", "export_weights",
           "find_mapping", "import_weights", "is_foreign", "load_mapping", "load_source", "parse_mapping",
           "read_source", "save_exported", "source_module", "verify"]
