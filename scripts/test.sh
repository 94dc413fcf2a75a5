#!/usr/bin/env bash
# The test command: fetches the models if needed, then runs the whole test suite, then
# the hardware tests this CPU can run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
# Python packages the integration tests drive (openai client, llama-cpp-python's
# server, datasets); the llama-cpp-python wheel is built once and cached. Tests that
# need a missing package skip outside CI and fail in CI.
bash scripts/python-deps.sh
# Headless Chromium for the explorer page's test (Debian's package).
bash scripts/browser-deps.sh
cargo test --workspace --locked "$@"
# Tests of a bf16 unit (named hw_amx_*, hw_avx512bf16_*, hw_bf16_*: either unit) are
# #[ignore]d, so a CPU without the unit reports them as ignored, never as passed.
# Here they run where the CPU has the unit, and the log says which ran.
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() { [[ "$flags" == *" $1 "* ]]; }
ran=() skipped=()
if has amx_bf16 && has amx_tile; then ran+=(hw_amx); else skipped+=("hw_amx (no AMX)"); fi
if has avx512_bf16; then ran+=(hw_avx512bf16); else skipped+=("hw_avx512bf16 (no AVX512_BF16)"); fi
if has amx_bf16 || has avx512_bf16; then ran+=(hw_bf16); else skipped+=("hw_bf16 (no bf16 unit)"); fi
for t in ${ran[@]+"${ran[@]}"}; do
  cargo test --workspace --locked -- --ignored "$t"
done
echo "hardware tests run: ${ran[*]:-none}; skipped: ${skipped[*]:-none}"
