# Two commands on a fresh machine:
#   make demo   set everything up, then compile, draw, export, run and train a bundled spec
#   make test   set everything up, then run the test suite
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
OUT    ?= out

.PHONY: setup demo test bench gpu clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	sh tools/ensure-debian-package.sh python3-venv "$(PYTHON) -c 'import ensurepip, venv'" \
	  "Python's venv, for the .venv this setup builds"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	sh tools/ensure-debian-package.sh graphviz "command -v dot" \
	  "the dot program: .svg/.png/.pdf drawings; .dot output works without it"
	touch $@

demo: setup
	sh tools/demo.sh $(VENV) $(OUT)

# One BLAS thread per pytest worker: two workers on two cores, and small networks are bound by
# per-op overhead, where multithreaded BLAS only adds contention (about 8x slower here).
test: setup
	sh tools/ensure-debian-package.sh chromium "command -v chromium" \
	  "a headless browser: the HTML report test is skipped without it"
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -p no:cacheprovider

# Swap the CPU build of ONNX Runtime for the CUDA one (both provide the `onnxruntime` module,
# so they must not be installed together), then show what the runtime sees.
gpu: setup
	$(PY) -m pip uninstall -y -q onnxruntime
	$(PY) -m pip install -q onnxruntime-gpu
	$(VENV)/bin/archdsl doctor

# Benchmarks (each prints a table and rewrites its bench/*.md); see bench/README.md.
bench: setup
	for b in bench/bench_*.py; do OPENBLAS_NUM_THREADS=1 $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
