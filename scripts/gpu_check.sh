#!/usr/bin/env bash
# Every CUDA path of the project, checked on a machine with an NVIDIA GPU in under 8 minutes:
#
#   bash scripts/gpu_check.sh            # after `pip install -e ".[dev]"` with a CUDA build of torch
#
# One line per check with its figure, "FAIL <check>: <why>" where one fails; the script goes on
# to the next check either way and exits 1 if any failed. Record the figures in
# docs/performance.md. Without a GPU it says so and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d -t gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failed=0

check() {  # check NAME COMMAND...: run it with a time limit, print its last line or FAIL
    local name=$1; shift
    local out
    if out=$(timeout 300 "$@" 2>"$WORK/$name.err"); then
        printf '%-28s %s\n' "$name" "$(printf '%s\n' "$out" | tail -n 1)"
    else
        printf 'FAIL %-23s %s\n' "$name" "$(tail -n 3 "$WORK/$name.err" | tr '\n' ' ')"
        failed=1
    fi
}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch: nothing to check here" >&2
    exit 2
fi

check device "$PYTHON" - <<'PY'
import torch
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, compute {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
      f"torch {torch.__version__} CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
PY

# A real kernel in each precision the trainer uses, and the dense throughput it reaches.
check matmul "$PYTHON" - <<'PY'
import time, torch
figures = []
for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                          ("bf16", torch.bfloat16, False)):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    (a @ a).sum().item()
    torch.cuda.synchronize(); started = time.perf_counter()
    for _ in range(10):
        b = a @ a
    torch.cuda.synchronize()
    figures.append(f"{name} {10 * 2 * 8192**3 / (time.perf_counter() - started) / 1e12:.0f} TFLOP/s")
print(", ".join(figures))
PY

# NCCL: an all-reduce across the GPU's process group (world size 1 on a one-GPU machine).
cat > "$WORK/nccl.py" <<'PY'
import torch, torch.distributed as dist
dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(rank)
value = torch.ones(1, device="cuda") * (rank + 1)
dist.all_reduce(value)
world = dist.get_world_size()
assert value.item() == world * (world + 1) / 2, value
if rank == 0:
    print(f"nccl all_reduce over {world} process(es): ok")
dist.destroy_process_group()
PY
check nccl torchrun --standalone --nproc_per_node "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" "$WORK/nccl.py"

# The project's CUDA tests (marked gpu, skipped on machines without one).
check gpu-tests "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider

# Training benchmark against Trainer, bf16 on both sides (MiniLM; BABE when ../shared has it):
# the defaults' row (with its MFU column) and the like-for-like summary, on one line. The
# benchmark reports a failed path in its table and goes on, so no summary line is a failure.
check bench-minilm bash -c "$PYTHON benchmarks/bench_training.py --model minilm --only defaults \
    trainer-bf16 trainer > '$WORK/bench.out' 2>&1; grep -E '^this trainer \(defaults\)|^like for like' \
    '$WORK/bench.out' | tr -s ' ' | paste -sd ';' | grep . \
    || { grep -E 'failed|Error' '$WORK/bench.out' | tail -n 3 >&2; exit 1; }"

# MFU of a base-size encoder's training step: BERT-base shape, batch 64 x 128 tokens, bf16
# autocast, forward and backward, against the GPU's dense bf16 peak.
check mfu-base "$PYTHON" - <<'PY'
import time, torch
from transformers import BertConfig, BertForSequenceClassification
from benchmarks.bench_training import PEAK_BF16_FLOPS
model = BertForSequenceClassification(BertConfig(num_labels=3)).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids = torch.randint(0, 30522, (64, 128), device="cuda")
labels = torch.randint(0, 3, (64,), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=labels).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
for _ in range(3):
    step()
torch.cuda.synchronize(); started = time.perf_counter()
for _ in range(20):
    step()
torch.cuda.synchronize()
seconds = (time.perf_counter() - started) / 20
parameters = sum(p.numel() for p in model.parameters())
achieved = 6 * parameters * 64 * 128 / seconds
name = torch.cuda.get_device_name(0)
peak = next((value for key, value in PEAK_BF16_FLOPS.items() if key in name), None)
mfu = f"MFU {achieved / peak:.0%}" if peak else "MFU: no peak known for this GPU"
print(f"BERT-base step {seconds * 1000:.0f} ms, {achieved / 1e12:.0f} TFLOP/s, {mfu}")
PY

# A one-GPU run under torchrun: the data-parallel path with its process group on CUDA.
check torchrun-1gpu "$PYTHON" - <<'PY'
import json, subprocess, sys, tempfile, yaml, pathlib
work = pathlib.Path(tempfile.mkdtemp())
config = {"experiment_name": "torchrun_gpu", "seed": 1,
          "model": {"architecture": "bert", "model_name": "minilm", "num_labels": 3},
          "training": {"batch_size": 32, "epochs": 1, "device": "cuda"},
          "data": {"dataset": "demo"}, "logging": {"tensorboard": False}}
(work / "c.yaml").write_text(yaml.safe_dump(config))
done = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "1", "run_experiment.py",
                       str(work / "c.yaml"), "--output-dir", str(work / "runs")],
                      capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stderr[-2000:])
results = json.loads(next((work / "runs").glob("*/results.json")).read_text())
training = results["training"]
print(f"world {training['world_size']}, {training['mixed_precision']}, test macro-F1 "
      f"{results['test']['f1_macro']:.3f}, {results['timing']['train_samples_per_second']:.0f} samples/s")
PY

exit $failed
