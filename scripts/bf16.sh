# Sourced by the job scripts: whether this CPU has a bf16 unit (AMX or AVX512_BF16),
# and the flags that use it. Sets
#   bf16_label   (--bf16) for `uae label`: the LLM's projections in bf16
#   bf16_train   (--mixed-precision) for `uae train`: bf16 GEMMs, f32 weights
# both empty where the CPU has no unit or BF16=0 (f32 everywhere).
hw_bf16() { grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo 2>/dev/null; }
bf16_label=()
bf16_train=()
if [[ "${BF16:-1}" != 0 ]] && hw_bf16; then
  bf16_label=(--bf16)
  bf16_train=(--mixed-precision)
fi
