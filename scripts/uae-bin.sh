# Sourced by the job scripts: fetches the models and sets `uae` to the binary to run:
# $UAE_BIN when set (to compare two versions on the same inputs), else this
# checkout's release build.
bash scripts/fetch-models.sh
if [[ -n "${UAE_BIN:-}" ]]; then
  uae="$UAE_BIN"
else
  cargo build --release --locked
  uae=./target/release/uae
fi
