# Two entry points: `make demo` and `make test` (see README). Both work on a fresh Debian 12 as root.
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := haproxy nginx-light iperf3 wrk curl procps iproute2 python3-venv redis-server redis-tools chromium mariadb-server mariadb-client sysbench keepalived nftables strace
# Only `make bench-redis` needs these (twemproxy), so `make test` does not install them.
BENCH_REDIS_PACKAGES := nutcracker

.PHONY: demo test lint bench-tcp bench-http bench-redis bench-mysql bench-kernel deps-system deps-bench-redis deps-python venv clean

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory deps-python
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

# Debian's python3 needs python3-venv before `python3 -m venv` works.
deps-python:
	@if ! python3 -c 'import ensurepip' >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi

# $(call apt_install,PACKAGES): installs those of PACKAGES that are missing, as root on Debian;
# elsewhere it does nothing and the tools must already be there.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

deps-system:
	@$(call apt_install,$(APT_PACKAGES))

deps-bench-redis:
	@$(call apt_install,$(BENCH_REDIS_PACKAGES))

demo: venv
	$(VENV)/bin/steelyard demo

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: deps-system venv lint
	$(PY) -m pytest -q

bench-tcp: deps-system venv
	$(PY) bench/tcp.py

bench-http: deps-system venv
	$(PY) bench/http.py

bench-redis: deps-system deps-bench-redis venv
	$(PY) bench/redis.py

bench-mysql: deps-system venv
	$(PY) bench/mysql.py

bench-kernel: deps-system venv
	$(PY) bench/kernel.py

clean:
	rm -rf $(VENV) build *.egg-info
