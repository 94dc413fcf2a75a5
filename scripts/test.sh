#!/usr/bin/env bash
# The test command: fetches the models if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
# Python packages the integration tests drive (openai client, llama-cpp-python's
# server, datasets); the llama-cpp-python wheel is built once and cached. Tests that
# need a missing package skip outside CI and fail in CI.
bash scripts/python-deps.sh
cargo test --workspace --locked "$@"
