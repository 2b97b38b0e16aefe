"""Training speed and quality: this trainer against Hugging Face ``Trainer``, in one run.

    python benchmarks/bench_training.py                      # MiniLM, BABE SG2-dev binary, 1 epoch
    python benchmarks/bench_training.py --epochs 3 --skip compile
    python benchmarks/bench_training.py --data demo          # without the BABE files

Every path trains the same model (same initial weights) on the same train split with the same
hyper-parameters (batch size, learning rate, linear schedule, weight decay, clipping, seed) and
is scored on the same validation split with an ordered forward pass:

- this trainer with its defaults, and with each fast path switched on or off;
- ``transformers.Trainer`` with ``group_by_length`` and dynamic padding (the peer a user would
  pick), in fp32 as it comes and with ``bf16=True``;
- a fixed-shape pipeline padding every batch to ``--pad-length`` (timed on a few steps only).

Each path runs in its own process, so peak memory is its own. Printed: samples/s, wall time to a
trained and evaluated model, peak memory, validation macro/weighted F1, and ratios to ``Trainer``.
On CUDA it also prints model FLOPs utilisation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
BABE_DIR = Path(os.environ.get("BABE_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "babe"))

# --only/--skip name -> (printed name, runner, config overrides or Trainer options)
# name -> (label in the report, which runner, config overrides or Trainer arguments)
PATHS: dict[str, tuple[str, str, dict[str, object]]] = {
    "defaults": ("this trainer (defaults)", "ours", {}),
    "fp32": ("this trainer, fp32", "ours", {"training.mixed_precision": "no"}),
    "random": ("this trainer, random batches", "ours", {"training.group_by_length": False}),
    "sdpa": ("this trainer, sdpa attention", "ours", {"model.attention": "sdpa"}),
    "foreach": ("this trainer, no fused AdamW", "ours", {"training.fused_adamw": False}),
    "compile": ("this trainer, torch.compile", "ours", {"training.compile": True}),
    "trainer": ("Trainer, group_by_length", "trainer", {}),
    "trainer-bf16": ("Trainer, group_by_length, bf16", "trainer", {"bf16": True}),
    "padded": ("pad to max length", "padded", {}),
}
PEER = "Trainer, group_by_length"
# Dense bf16 tensor-core peaks (FLOP/s) for the MFU line.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
                   "V100": 125e12, "T4": 65e12}


def experiment_config(args) -> dict:
    """The shared recipe, as a config of this project; the Trainer paths read the same values."""
    babe = args.data == "babe"
    model = ({"architecture": "bert", "model_name": "minilm"} if args.model == "minilm" else
             {"architecture": "bert", "model_name": "tiny-bert", "pretrained": False,
              "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": 500})
    return {
        "experiment_name": "bench", "seed": 42,
        "model": {**model, "num_labels": 2 if babe else 3, "dropout": 0.1},
        "training": {"batch_size": args.batch_size, "eval_batch_size": 64,
                     "learning_rate": args.learning_rate, "epochs": args.epochs,
                     "warmup_steps": 0, "weight_decay": 0.01, "max_grad_norm": 1.0,
                     "max_steps": args.max_steps, "device": "auto"},
        "data": {"dataset": "babe" if babe else "demo",
                 "path": str(BABE_DIR / "final_labels_SG2_dev.csv") if babe else None,
                 "filter_no_agreement": babe, "max_length": args.max_length,
                 "max_samples": args.max_samples, "train_split": 0.8, "validation_split": 0.1},
        "logging": {"tensorboard": False, "wandb": False, "log_steps": 50, "save_steps": 0,
                    "save_minutes": 0},
    }


def apply_overrides(config: dict, overrides: dict) -> dict:
    for dotted, value in overrides.items():
        section, name = dotted.split(".")
        config[section][name] = value
    return config


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_ours(config_data: dict, overrides: dict) -> dict:
    from backend.ml.config import ExperimentConfig
    from backend.ml.run import run_experiment

    config = ExperimentConfig.from_dict(apply_overrides(config_data, overrides))
    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        run_dir = run_experiment(config, output)
        wall = time.perf_counter() - started
        results = json.loads((run_dir / "results.json").read_text())
    import torch

    device = torch.device(results["metadata"]["device"])
    return {"samples_per_second": results["timing"]["train_samples_per_second"],
            "wall_seconds": wall, "peak_mb": peak_memory_mb(device),
            "f1_macro": results["eval"]["f1_macro"], "f1_weighted": results["eval"]["f1_weighted"],
            "parameters": results["model"]["total_parameters"], "device": str(device),
            "tokens_per_sample": padded_tokens_per_sample(config),
            # training.mixed_precision "no" is full precision
            "precision": {"no": "fp32"}.get(results["training"]["mixed_precision"],
                                            results["training"]["mixed_precision"])}


def padded_tokens_per_sample(config) -> float:
    """Mean padded tokens per training sentence under grouped batching (for the MFU line)."""
    from backend.ml.data import TokenizedDataset, prepare_splits
    from backend.ml.model_factory import ModelFactory
    from backend.ml.training.batching import LengthGroupedBatchSampler

    splits = prepare_splits(config.data, config.seed)
    tokenizer = ModelFactory.create(config.model, splits.label_names, splits.train.texts).tokenizer
    lengths = TokenizedDataset(splits.train, tokenizer, config.data.max_length).lengths
    sampler = LengthGroupedBatchSampler(lengths, config.training.batch_size, config.seed)
    batches = sampler.global_batches(0)
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches) / len(lengths)


def run_trainer(config_data: dict, options: dict, padded: bool = False,
                pad_steps: int = 4) -> dict:
    """transformers.Trainer on the same split, model and hyper-parameters."""
    import numpy as np
    import torch
    from datasets import Dataset
    from sklearn.metrics import f1_score
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from backend.ml.config import ExperimentConfig
    from backend.ml.data import prepare_splits
    from backend.ml.model_factory import ModelFactory

    config = ExperimentConfig.from_dict(config_data)
    set_seed(config.seed)
    splits = prepare_splits(config.data, config.seed)
    set_seed(config.seed)
    built = ModelFactory.create(config.model, splits.label_names, splits.train.texts)
    tokenizer, training, max_length = built.tokenizer, config.training, config.data.max_length

    def tokenize(split):
        encoded = tokenizer(list(split.texts), truncation=True, max_length=max_length)
        return Dataset.from_dict({**encoded, "labels": [int(label) for label in split.labels]})

    collator = (DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length)
                if padded else DataCollatorWithPadding(tokenizer))
    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(
            output_dir=output, per_device_train_batch_size=training.batch_size,
            learning_rate=training.learning_rate, num_train_epochs=training.epochs,
            max_steps=pad_steps if padded else (training.max_steps or -1),
            weight_decay=training.weight_decay, max_grad_norm=training.max_grad_norm,
            warmup_steps=training.warmup_steps, lr_scheduler_type="linear",
            train_sampling_strategy="random" if padded else "group_by_length",
            seed=config.seed, eval_strategy="no",
            save_strategy="no", logging_strategy="no", report_to=[],
            disable_tqdm=False, dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(), **options)
        trainer = Trainer(model=built.model, args=arguments, train_dataset=tokenize(splits.train),
                          data_collator=collator)
        started = time.perf_counter()
        metrics = trainer.train().metrics
        model = trainer.model
        if model is None:  # Trainer keeps the model it was given
            raise RuntimeError("Trainer holds no model after training")
        device = next(model.parameters()).device
        if padded:
            return {"samples_per_second": metrics["train_samples_per_second"],
                    "wall_seconds": None, "peak_mb": peak_memory_mb(device), "f1_macro": None,
                    "f1_weighted": None, "device": str(device)}
        # An ordered forward pass: Trainer.predict reorders under group_by_length.
        predictions = []
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                    enabled=bool(options.get("bf16"))):
            texts = list(splits.validation.texts)
            for start in range(0, len(texts), 64):
                batch = tokenizer(texts[start:start + 64], truncation=True,
                                  max_length=max_length, padding=True, return_tensors="pt")
                batch = {key: value.to(device) for key, value in batch.items()
                         if key in ("input_ids", "attention_mask")}
                predictions += model(**batch).logits.argmax(-1).tolist()
        wall = time.perf_counter() - started
    labels = np.asarray(splits.validation.labels)
    return {"samples_per_second": metrics["train_samples_per_second"], "wall_seconds": wall,
            "peak_mb": peak_memory_mb(device),
            "f1_macro": f1_score(labels, predictions, average="macro"),
            "f1_weighted": f1_score(labels, predictions, average="weighted"),
            "device": str(device)}


def run_child(spec: dict) -> None:
    _, runner, options = PATHS[spec["path"]]
    config = spec["config"]
    if runner == "ours":
        result = run_ours(config, options)
    elif runner == "trainer":
        result = run_trainer(config, options)
    else:
        config["data"]["max_length"] = spec["pad_length"]
        result = run_trainer(config, {}, padded=True, pad_steps=spec["pad_steps"])
    print("RESULT " + json.dumps(result), flush=True)


def run_path(key: str, spec: dict) -> dict | None:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "WANDB_MODE": "disabled"}
    completed = subprocess.run([sys.executable, __file__, "--child", json.dumps({**spec,
                                                                                "path": key})],
                               cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        print(f"  {PATHS[key][0]}: failed\n{completed.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def model_flops_utilization(result: dict) -> str:
    """6 x parameters x tokens per sample x samples/s against the GPU's dense bf16 peak."""
    if not result["device"].startswith("cuda"):
        return "n/a"
    import torch

    name = torch.cuda.get_device_name()
    peak = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    if peak is None or not result.get("tokens_per_sample"):
        return "n/a"
    achieved = 6 * result["parameters"] * result["tokens_per_sample"] * result["samples_per_second"]
    return f"{100 * achieved / peak:.1f}%"


def format_number(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", choices=("babe", "demo"), default="babe" if (
        BABE_DIR / "final_labels_SG2_dev.csv").is_file() else "demo")
    parser.add_argument("--model", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=0, help="subsample the data (0: all)")
    parser.add_argument("--pad-length", type=int, default=512)
    parser.add_argument("--pad-steps", type=int, default=4, help="timed steps of the padded path")
    parser.add_argument("--only", nargs="+", choices=sorted(PATHS), help="run these paths")
    parser.add_argument("--skip", nargs="+", choices=sorted(PATHS), default=[],
                        help="leave these paths out (compile takes minutes on a CPU)")
    args = parser.parse_args()
    if args.child:
        run_child(json.loads(args.child))
        return

    chosen = [key for key in (args.only or PATHS) if key not in args.skip]
    spec = {"config": experiment_config(args), "pad_length": args.pad_length,
            "pad_steps": args.pad_steps}
    import torch

    print(f"{args.model} on {args.data} ({'SG2-dev, binary' if args.data == 'babe' else 'demo'}), "
          f"batch {args.batch_size}, lr {args.learning_rate}, max_length {args.max_length}, "
          f"{args.epochs} epoch(s); {torch.get_num_threads()} CPU thread(s), "
          f"{torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}\n", flush=True)
    header = (f"{'path':<36}{'samples/s':>10}{'vs Trainer':>11}{'wall s':>8}{'peak MB':>9}"
              f"{'F1 macro':>9}{'F1 wtd':>8}{'MFU':>7}")
    print(header, flush=True)
    results = {}
    for key in chosen:
        name = PATHS[key][0]
        result = run_path(key, spec)
        if result is None:
            continue
        results[name] = result
        peer = results.get(PEER)
        ratio = (f"{result['samples_per_second'] / peer['samples_per_second']:.2f}x"
                 if peer else "")
        print(f"{name:<36}{result['samples_per_second']:>10.1f}{ratio:>11}"
              f"{format_number(result['wall_seconds'], '.1f'):>8}{result['peak_mb']:>9.0f}"
              f"{format_number(result['f1_macro'], '.4f'):>9}"
              f"{format_number(result['f1_weighted'], '.4f'):>8}"
              f"{model_flops_utilization(result):>7}", flush=True)

    ours = results.get("this trainer (defaults)")
    # Like for like first: Trainer in the precision the defaults resolved to, where it ran.
    same_precision = (results.get("Trainer, group_by_length, bf16")
                      if ours and ours.get("precision") == "bf16" else results.get(PEER))
    if ours and same_precision:
        print(f"\nlike for like ({ours.get('precision')} on both sides): "
              f"{_versus(ours, same_precision)}")
    peer = results.get(PEER)
    if ours and peer and peer is not same_precision:
        print(f"this trainer (defaults, {ours.get('precision')}) vs Trainer with "
              f"group_by_length (fp32, its default): {_versus(ours, peer)}")
    padded = results.get("pad to max length")
    if ours and padded:
        print(f"this trainer (defaults) vs padding to {args.pad_length}: "
              f"{ours['samples_per_second'] / padded['samples_per_second']:.2f}x samples/s")


def _versus(ours: dict, peer: dict) -> str:
    return (f"{ours['samples_per_second'] / peer['samples_per_second']:.2f}x samples/s, "
            f"{peer['wall_seconds'] / ours['wall_seconds']:.2f}x faster to a trained model, "
            f"F1 macro {ours['f1_macro'] - peer['f1_macro']:+.4f}")


if __name__ == "__main__":
    main()
