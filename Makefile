# The two commands a newcomer needs (see README.md). Each prepares .venv itself.
.PHONY: demo test setup

setup:
	@bash scripts/setup-env.sh

demo: setup
	.venv/bin/reirradiation demo --output demo-output

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider
	bash scripts/test-slicer-python.sh
