#!/usr/bin/env bash
# Build the offline vLLM 0.26.0 bundle for the GPU machine.
#
# Why: the GPU machine has no network and takes at most 64 MiB of files per run, so vLLM cannot be
# pip-installed there. This script follows ../shared/reference/vllm_on_gpu.md ("What to send"): it downloads
# the exact 64 wheels that the image lacks (Python 3.12, manylinux x86_64, --no-deps --only-binary=:all:),
# slims the vllm wheel (drops FlashAttention-2, the vllm-rs frontend binary and the deep_gemm extensions that
# are not for cp312; FlashAttention-3 stays), repacks it with `wheel pack` (which regenerates RECORD), tars
# the wheels as wheels/*.whl and splits the tar into parts (PART_SIZE, 36 MiB) with sha256 sums. The parts travel one per
# device run; docs/performance.md ("The gateway in front of vLLM") shows how they are installed there.
#
# Usage: scripts/build_vllm_bundle.sh [WORKDIR]      (default: <repo>/.vllm_peer, which must stay git-ignored)
# Output in WORKDIR: wheels/ (64 .whl), vllm_bundle.tar.part-aa, -ab, ..., SHA256SUMS (parts and whole tar).
# The tar itself is deleted after splitting; `cat vllm_bundle.tar.part-* > vllm_bundle.tar` rebuilds it.
# Re-running reuses wheels already downloaded. Needs only PyPI; installs nothing into the project's .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/.vllm_peer}"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi

# The 64 wheels of the recipe, by exact file name (name and version are parsed from it). The vllm entry is the
# name after slimming: PyPI's file is vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl, but its WHEEL metadata
# says Tag: cp38-abi3-linux_x86_64, and `wheel pack` names the repacked wheel after that tag.
WHEELS=(
  annotated_types-0.8.0-py3-none-any.whl
  apache_tvm_ffi-0.1.10-cp312-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
  astor-0.8.1-py2.py3-none-any.whl
  blake3-1.0.11-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
  cachetools-8.0.1-py3-none-any.whl
  cbor2-6.3.0-cp312-cp312-manylinux_2_28_x86_64.whl
  compressed_tensors-0.17.0-py3-none-any.whl
  cuda_python-13.4.4-py3-none-any.whl
  cuda_tile-1.7.0-cp312-cp312-manylinux2014_x86_64.whl
  depyf-0.20.0-py3-none-any.whl
  dill-0.4.1-py3-none-any.whl
  dnspython-2.9.2-py3-none-any.whl
  email_validator-2.4.0-py3-none-any.whl
  fastapi-0.136.3-py3-none-any.whl
  fastsafetensors-0.5.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
  flashinfer_python-0.6.14-py3-none-any.whl
  httpcore2-2.16.2-py3-none-any.whl
  httptools-0.9.0-cp312-cp312-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl
  httpx2-2.16.2-py3-none-any.whl
  ijson-3.6.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl
  interegular-0.3.3-py37-none-any.whl
  jiter-0.19.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
  jmespath-1.1.0-py3-none-any.whl
  jsonschema-4.26.0-py3-none-any.whl
  jsonschema_specifications-2025.9.1-py3-none-any.whl
  lark-1.2.2-py3-none-any.whl
  llguidance-1.7.6-cp39-abi3-manylinux_2_31_x86_64.whl
  lm_format_enforcer-0.11.3-py3-none-any.whl
  loguru-0.7.3-py3-none-any.whl
  mdurl-0.1.2-py3-none-any.whl
  ml_dtypes-0.6.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
  model_hosting_container_standards-0.1.16-py3-none-any.whl
  msgspec-0.22.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl
  nvidia_cudnn_frontend-1.28.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
  nvtx-0.2.15-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl
  openai-3.54.0-py3-none-any.whl
  openai_harmony-0.0.8-cp38-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
  outlines_core-0.2.14-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
  partial_json_parser-0.2.1.1.post7-py3-none-any.whl
  prometheus_fastapi_instrumentator-8.1.0-py3-none-any.whl
  pybase64-1.5.1-cp312-cp312-manylinux1_x86_64.manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_5_x86_64.whl
  pydantic-2.14.3-py3-none-any.whl
  pydantic_core-2.50.4-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
  pydantic_extra_types-2.11.1-py3-none-any.whl
  pydantic_settings-2.16.3-py3-none-any.whl
  pyelftools-0.33-py3-none-any.whl
  python_dotenv-1.2.4-py3-none-any.whl
  python_json_logger-4.2.0-py3-none-any.whl
  python_multipart-0.0.34-py3-none-any.whl
  pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl
  referencing-0.37.0-py3-none-any.whl
  rpds_py-2026.9.1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
  setproctitle-1.3.8-cp312-cp312-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl
  shellingham-1.5.4-py2.py3-none-any.whl
  sniffio-1.3.1-py3-none-any.whl
  starlette-1.10.0-py3-none-any.whl
  supervisor-4.3.0-py2.py3-none-any.whl
  truststore-0.10.5-py3-none-any.whl
  typing_inspection-0.4.5-py3-none-any.whl
  uvicorn-0.54.0-py3-none-any.whl
  vllm-0.26.0-cp38-abi3-linux_x86_64.whl
  watchfiles-1.3.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
  websockets-17.4-cp312-cp312-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl
  xgrammar-0.2.7-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
)
VLLM_WHEEL=vllm-0.26.0-cp38-abi3-linux_x86_64.whl                # slim, repacked
VLLM_PYPI_WHEEL=vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl   # as downloaded
# The device run carries the whole checkout too (~26 MB, mostly the demo model) within its 64 MiB, so a part
# is 36 MiB (6 runs), not the recipe's 60 (2026-12-04: a 60 MiB part was refused).
PART_SIZE="${PART_SIZE:-36M}"

mkdir -p "$WORK/wheels"
cd "$WORK"

# 1. Download, one pin at a time, with the recipe's command line; report every pin that fails. A pin counts
# as present when wheels/ holds NAME-VERSION-*.whl: for some pins PyPI has several builds of the same version
# (apache_tvm_ffi 0.1.10: manylinux2014/_2_17 and manylinux_2_24/_2_28), and this command line may pick
# another build than the file named in the recipe. Such differences are printed, not treated as errors.
have() { compgen -G "wheels/$1-$2-*.whl" > /dev/null; }
failed=()
for whl in "${WHEELS[@]}"; do
  name="${whl%%-*}"; rest="${whl#*-}"; version="${rest%%-*}"
  have "$name" "$version" && continue
  if ! "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_35_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d wheels "$name==$version"; then
    failed+=("$name==$version")
  elif ! have "$name" "$version"; then
    echo "error: $name==$version was saved under an unexpected file name" >&2
    failed+=("$name==$version (file name)")
  fi
done
if ((${#failed[@]})); then
  echo "error: could not download: ${failed[*]}" >&2
  exit 1
fi

# 2. Slim the vllm wheel (once: the downloaded file is replaced by the slim one). `wheel` lives in a throwaway venv.
if [[ -f "wheels/$VLLM_PYPI_WHEEL" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q wheel
  "$tmp/venv/bin/python" -m wheel unpack -d "$tmp/unpacked" "wheels/$VLLM_PYPI_WHEEL"
  src="$tmp/unpacked/vllm-0.26.0"
  # FlashAttention-2 (Ampere only); FlashAttention-3 (_vllm_fa3_C.abi3.so) stays.
  rm -v "$src/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
  # The vllm-rs frontend binary.
  rm -v "$src/vllm/vllm-rs"
  # deep_gemm extension modules built for CPython versions other than 3.12.
  find "$src/vllm/third_party/deep_gemm" -maxdepth 1 -name '_C.cpython-*.so' ! -name '_C.cpython-312-*' -print -delete
  mkdir -p "$tmp/packed"
  "$tmp/venv/bin/python" -m wheel pack -d "$tmp/packed" "$src"
  mv "$tmp/packed/$VLLM_WHEEL" "wheels/$VLLM_WHEEL"
  rm "wheels/$VLLM_PYPI_WHEEL"
fi

n=$(find wheels -maxdepth 1 -name '*.whl' | wc -l)
if [[ "$n" -ne ${#WHEELS[@]} ]]; then
  echo "error: wheels/ holds $n .whl files, expected ${#WHEELS[@]}" >&2
  exit 1
fi
for whl in "${WHEELS[@]}"; do
  if [[ ! -f "wheels/$whl" ]]; then
    name="${whl%%-*}"; rest="${whl#*-}"; version="${rest%%-*}"
    echo "note: recipe names $whl; this build has $(cd wheels && echo "$name-$version"-*.whl)"
  fi
done

# 3. Tar as wheels/*.whl, split into PART_SIZE parts, record sums of the parts and of the whole tar.
rm -f vllm_bundle.tar vllm_bundle.tar.part-* SHA256SUMS
tar -cf vllm_bundle.tar wheels/*.whl
split -b "$PART_SIZE" vllm_bundle.tar vllm_bundle.tar.part-
sha256sum vllm_bundle.tar.part-* vllm_bundle.tar > SHA256SUMS
rm -f vllm_bundle.tar
ls -l vllm_bundle.tar.part-*
cat SHA256SUMS
