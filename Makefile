# Setup is two commands on a fresh machine: `make demo` and `make test`.
# Both find a Python 3.10 (PYTHON=... override, python3.10 or python3 on PATH,
# or pyenv's versions directory), build .venv and install the project into it.
SHELL := /bin/bash
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

define find_python
for c in "$(PYTHON)" python3.10 python3 $$HOME/.pyenv/versions/3.10.*/bin/python /usr/local/bin/python3.10 /usr/bin/python3.10; do \
  [ -n "$$c" ] || continue; \
  p=$$(command -v "$$c" 2>/dev/null) || continue; \
  if "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then echo "$$p"; exit 0; fi; \
done; exit 1
endef

.PHONY: demo test venv clean crosscheck

$(STAMP): pyproject.toml
	@py=$$( $(find_python) ) || { echo "error: no Python 3.10 found (lava-nc needs 3.10); set PYTHON=/path/to/python3.10" >&2; exit 2; }; \
	echo "using $$py"; \
	[ -x $(VPY) ] && $(VPY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' || { rm -rf $(VENV); "$$py" -m venv $(VENV); }
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q -e .
	touch $(STAMP)

venv: $(STAMP)

DEMO := demo_out
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(VPY) cli.py data info builtin
	$(VPY) cli.py data plot builtin --index 0 --out $(DEMO)/sample0.png
	$(VPY) cli.py train --model cuba-lif --layers 1 --hidden 64 --data builtin --bin-hz 100 --epochs 15 --batch 16 --out $(DEMO)/cuba-lif
	$(VPY) cli.py eval $(DEMO)/cuba-lif
	$(VPY) cli.py export $(DEMO)/cuba-lif/best.pt --target loihi2 --out $(DEMO)/cuba-lif/net.h5
	$(VPY) cli.py simulate $(DEMO)/cuba-lif/net.h5 --engine lava --limit 10
	$(VPY) cli.py simulate $(DEMO)/cuba-lif/net.h5 --engine fast
	$(VPY) cli.py report $(DEMO) --out $(DEMO)/report.html
	$(VPY) cli.py compare $(DEMO)/cuba-lif/net.h5 --limit 10
	@echo "what you just saw: a Cuba-LIF trained on the built-in set, exported to Loihi 2 fixed point, run in Lava and the fast"
	@echo "engine (same spikes, same counts), reported in $(DEMO)/report.html; measured_vs_predicted_fixed=0: Lava's counters equal Table 2."

test: $(STAMP)
	@$(VPY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

crosscheck: $(STAMP)
	$(VPY) -m pip install -q -e ".[crosscheck]"
	$(VPY) -m pip check
	$(VPY) benchmarks/ops_crosscheck.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
