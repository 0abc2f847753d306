# The two commands of the README. Each creates and fills its own virtual environment when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cosam-installed

.PHONY: install test demo clean

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	nnUNet_def_n_proc=1 $(PY) -m pytest -q tests

demo: $(STAMP)
	nnUNet_def_n_proc=1 $(VENV)/bin/cosam_demo --work demo_work

clean:
	rm -rf demo_work .pytest_cache
