# The two commands of the README: `make demo` and `make test`.
PREFIX ?= /usr/local

.PHONY: demo test lint unit bench

demo:
	bash scripts/deps.sh
	cargo run --release --example quickstart

test: lint unit

lint:
	bash scripts/deps.sh
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test

bench:
	cargo bench

# Block tiers: open time / index size, and get vs foyer and a pread floor.
.PHONY: bench-block
bench-block:
	cargo run --release --example block_open -- 1000000 /var/tmp
	cargo run --release --manifest-path bench/foyer-cmp/Cargo.toml
