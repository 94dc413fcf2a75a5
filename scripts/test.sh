#!/usr/bin/env bash
# The test command: fetches the models if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
cargo test --workspace --locked "$@"
