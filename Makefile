# The two commands of the README: `make demo` and `make test`.
PREFIX ?= /usr/local

.PHONY: demo tour test lint unit bench

demo:
	bash scripts/demo.sh

tour:
	bash scripts/deps.sh
	cargo run --release --example quickstart

test: lint unit ffi

lint:
	bash scripts/deps.sh
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p ngx_http_rcdn_module --all-targets --features vendored,fault-injection -- -D warnings
	$(MAKE) header-check

unit:
	cargo test --workspace --features ngx_http_rcdn_module/vendored,ngx_http_rcdn_module/fault-injection

bench:
	cargo bench

# C ABI (docs/c-abi.md): libcdncore.so/.a, include/cdncore.h, cdncore.pc.
.PHONY: ffi install header-check bench-ffi

# Regenerates include/cdncore.h and fails if the committed one was stale.
header-check:
	CDNCORE_HEADER_STRICT=1 cargo build --lib
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git diff --exit-code include/ || { echo "include/cdncore.h was stale: commit the regenerated header"; exit 1; }; \
	else echo "header-check: not a git checkout, staleness not checked"; fi

# C tests (plain, valgrind, ASan), the C example and the Go tests.
ffi:
	bash scripts/deps.sh
	bash ffi-tests/run.sh

install:
	bash scripts/install.sh $(PREFIX)

# get-hit through the C ABI vs the same loop in Rust.
bench-ffi:
	bash ffi-tests/bench.sh

# Block tiers: open time / index size, and get vs foyer and a pread floor.
.PHONY: bench-block
bench-block:
	cargo run --release --example block_open -- 1000000 /var/tmp
	cargo run --release --manifest-path bench/foyer-cmp/Cargo.toml

# Cluster of nodes: origin requests per object (3 rcdn nodes vs 3 proxy_cache
# nodes) and peer-filled vs local hits (nginx-module/bench/peers.sh).
.PHONY: bench-peers bench-io bench-big bench-mem
bench-peers:
	bash nginx-module/bench/peers.sh

# rcdn_io_threads on vs off on hits from a warm block tier.
bench-io:
	bash nginx-module/bench/iothreads.sh

# 1 MiB hits beyond the memory tier vs proxy_cache (default and promote_max=32k).
bench-big:
	bash nginx-module/bench/bighits.sh

# A node's memory after warm-up by process and mapping, 2 and 4 workers,
# vs proxy_cache (nginx-module/bench/memory.sh).
bench-mem:
	bash nginx-module/bench/memory.sh

# The independent HTTP cache test suite (npm http-cache-tests 0.4.5, installed
# under target/ from the npm registry; needs node and npm) against an rcdn node
# and nginx proxy_cache: required tests passed per cache, results JSON in
# target/cache-tests/ (or RESULTS=dir). Another build: RCDN_MODULE=path/to.so.
# Not part of `make test`. See docs/nginx.md, "HTTP cache test suite".
.PHONY: cache-tests
cache-tests:
	bash nginx-module/bench/cache-tests.sh $(RESULTS)
