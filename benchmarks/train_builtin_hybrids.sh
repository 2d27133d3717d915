#!/usr/bin/env bash
# Train the two built-in hybrids, builtin-bamba (Mamba-2 + attention) and builtin-qwen3.5 (Gated DeltaNet +
# attention), on one CUDA GPU, both at once, into OUT_DIR (default: where the built-in models live).
#
#     bash benchmarks/train_builtin_hybrids.sh [OUT_DIR]       (OUT_DIR relative to the repository root)
#
# TRAIN_ARGS adds options of `python -m infoflow.builtin.train` to both, e.g. TRAIN_ARGS=--no-cuda-graph.
# Each trains on transformers' torch path (no mamba_ssm / flash-linear-attention kernels needed) for at most its
# DEFAULT_STEPS (2000, batch 128), fewer if the training loop would pass BUDGET seconds (default 360): the steps
# run are recorded in OUT_DIR/<family>/metrics.json, to rerun them exactly. Both logs are printed at the end.
# Needs transformers >= 5.2 (Qwen3.5) and a CUDA GPU; about 7 minutes on one H200.
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir=${1:-src/infoflow/builtin/models}
budget=${BUDGET:-360}
logs=$(mktemp -d)
python=${PYTHON:-python3}
mkdir -p "$out_dir"

"$python" -c 'import torch, transformers; assert torch.cuda.is_available(), "no CUDA GPU"; from transformers import BambaForCausalLM, Qwen3_5ForCausalLM; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())'

pids=()
for family in bamba qwen3.5; do
    PYTHONPATH=src PYTHONUNBUFFERED=1 "$python" -m infoflow.builtin.train --family "$family" --out "$out_dir/$family" \
        --device cuda --time-budget "$budget" ${TRAIN_ARGS:-} >"$logs/$family.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
for family in bamba qwen3.5; do
    echo "== $family"
    grep -v "falling back" "$logs/$family.log"
done
exit $status
