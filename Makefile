# Hako: host setup, the embedded default, tests and benchmarks.
PYTHON := .venv/bin/python

.DEFAULT_GOAL := help
.PHONY: help setup run test bench bench-provision bench-density bench-migrate

help:
	@echo "Hako make targets:"
	@echo "  setup  install host packages, start Redis/PostgreSQL/lxcfs, build .venv (root)"
	@echo "  run    the embedded default: panel, workers, beat and a local node agent"
	@echo "  test   the test suite (real LXC, Redis, Celery, PostgreSQL); args: ARGS=..."
	@echo "  bench  the job pipeline benchmark (bench/pipeline.py), reports figures"
	@echo "  bench-provision  busybox and debian-12 create+start p50/p95 (bench/provision.py)"
	@echo "  bench-density    CPU overhead inside a VE and memory per idle VE (bench/density.py)"
	@echo "  bench-migrate    downtime of migrating busybox and debian-12 (500 MB) VEs (bench/migrate.py)"

setup:
	bash scripts/setup-host.sh

run: setup
	exec bash scripts/run.sh

test: setup
	bash scripts/test.sh $(ARGS)

bench: setup
	$(PYTHON) bench/pipeline.py

bench-provision: setup
	$(PYTHON) bench/provision.py $(ARGS)

bench-density: setup
	$(PYTHON) bench/density.py $(ARGS)

bench-migrate: setup
	$(PYTHON) bench/migrate.py $(ARGS)
