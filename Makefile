# The two commands of the README: `make demo` and `make test`.
PREFIX ?= /usr/local

.PHONY: demo tour test lint unit bench

demo:
	bash scripts/demo.sh

tour:
	bash scripts/deps.sh
	cargo run --release --example quickstart

test: lint unit

lint:
	bash scripts/deps.sh
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p ngx_http_rcdn_module --all-targets --features vendored,fault-injection -- -D warnings

unit:
	cargo test --workspace --features ngx_http_rcdn_module/vendored,ngx_http_rcdn_module/fault-injection

bench:
	cargo bench
