#!/usr/bin/env bash
# Python packages the integration tests drive: the openai client (against `uae serve`),
# llama-cpp-python's OpenAI-compatible server (remote labeling), and datasets/pyarrow
# (the exported sentence-transformers labels must load). llama-cpp-python is an sdist
# that compiles llama.cpp (~10 min on 2 cores), so its wheel is built once and kept in
# $UAE_PIP_CACHE (default ~/.cache/uae/wheels) between runs, like the models.
# Portable build flags (AVX2/FMA, no -march=native) so a cached wheel runs on any x86-64
# CI machine, Xeon or EPYC. Failures are reported, not fatal: the tests that need a
# package skip with a message outside CI (and fail when the CI variable is set).
set -uo pipefail
cache="${UAE_PIP_CACHE:-$HOME/.cache/uae/wheels}"
mkdir -p "$cache"
LCP_VERSION=0.3.16
pip_q() { python3 -m pip install -q --disable-pip-version-check "$@"; }

python3 -c "import openai" 2>/dev/null || pip_q "openai>=1.40" \
  || echo "python-deps: could not install openai" >&2
python3 -c "import datasets, pyarrow" 2>/dev/null || pip_q "datasets>=2.19" "pyarrow>=15" \
  || echo "python-deps: could not install datasets/pyarrow" >&2

if ! python3 -c "import llama_cpp.server, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings" 2>/dev/null; then
  wheel=$(ls "$cache"/llama_cpp_python-"$LCP_VERSION"-*.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    echo "python-deps: building llama-cpp-python $LCP_VERSION (once; cached in $cache)" >&2
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      python3 -m pip wheel -q --disable-pip-version-check --no-deps \
      "llama-cpp-python==$LCP_VERSION" -w "$cache" \
      || echo "python-deps: could not build llama-cpp-python" >&2
    wheel=$(ls "$cache"/llama_cpp_python-"$LCP_VERSION"-*.whl 2>/dev/null | head -1)
  fi
  if [ -n "$wheel" ]; then
    pip_q "${wheel}[server]" || echo "python-deps: could not install $wheel" >&2
  fi
fi
exit 0
