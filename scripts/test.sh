#!/usr/bin/env bash
# The test command: fetches the models if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
# The serving tests drive `uae serve` with the official openai Python client.
if ! python3 -c "import openai" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check "openai>=1.40" \
    || echo "test: could not install the openai package; its test is skipped outside CI" >&2
fi
cargo test --workspace --locked "$@"
