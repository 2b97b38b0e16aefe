"""The training engine's parts: length-grouped batching, schedules, precision, DDP via torchrun."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.ml.cli import main
from backend.ml.config import ExperimentConfig, TrainingConfig
from backend.ml.data import prepare_splits
from backend.ml.errors import UserError
from backend.ml.model_factory import ModelFactory
from backend.ml.models.hardware import cpu_has_native_bf16
from backend.ml.run import run_experiment
from backend.ml.run_directory import read_results
from backend.ml.tracking import TrackerSet
from backend.ml.training.batching import LengthGroupedBatchSampler
from backend.ml.training.distributed import World
from backend.ml.training.optimization import build_optimizer, build_scheduler
from backend.ml.training.precision import resolve_precision
from backend.ml.training.steps import optimizer_steps_per_epoch, planned_steps
from backend.ml.training.trainer import ClassifierTrainer, NonFiniteLoss
from support.cli import REPO_ROOT, cli_environment, run_cli
from support.configs import tiny_config, write_config

LENGTHS = np.random.default_rng(0).integers(3, 120, size=1003).tolist()


def padded_tokens(batches: list[list[int]]) -> int:
    return sum(len(batch) * max(LENGTHS[index] for index in batch) for batch in batches)


def test_grouped_batches_cover_every_sentence_once_and_pad_far_less_than_random():
    grouped = LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=3)
    random_batches = LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=3,
                                               group_by_length=False)
    grouped_epoch, random_epoch = grouped.global_batches(0), random_batches.global_batches(0)
    assert sorted(index for batch in grouped_epoch for index in batch) == list(range(len(LENGTHS)))
    assert len(grouped_epoch) == len(random_epoch) == 32  # ceil(1003 / 32)
    assert padded_tokens(grouped_epoch) < 0.7 * padded_tokens(random_epoch)
    # Shuffled: the epoch does not run from the longest batch to the shortest.
    longest = [max(LENGTHS[index] for index in batch) for batch in grouped_epoch]
    assert longest != sorted(longest, reverse=True) and longest != sorted(longest)


def test_batches_are_a_function_of_seed_and_epoch_and_resume_mid_epoch():
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=16, seed=5)
    again = LengthGroupedBatchSampler(LENGTHS, batch_size=16, seed=5)
    assert sampler.global_batches(1) == again.global_batches(1)
    assert sampler.global_batches(0) != sampler.global_batches(1)
    assert sampler.global_batches(0) != LengthGroupedBatchSampler(
        LENGTHS, batch_size=16, seed=6).global_batches(0)
    sampler.set_epoch(1)
    whole = list(sampler)
    again.set_epoch(1, start_batch=25)
    assert list(again) == whole[25:] and len(again) == len(whole) - 25


def test_each_process_gets_its_share_of_the_same_global_batches():
    single = LengthGroupedBatchSampler(LENGTHS, batch_size=16, seed=1)
    shares = [LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=1, world_size=2, rank=rank)
              for rank in (0, 1)]
    for sampler in (single, *shares):
        sampler.set_epoch(2)
    for whole, first, second in zip(single.local_batches(), *(s.local_batches() for s in shares)):
        assert first.indices + second.indices == whole.indices
        assert first.global_size == second.global_size == len(whole.indices)


def test_a_global_batch_smaller_than_the_world_gives_a_weightless_share():
    shares = []
    for rank in (0, 1, 2):
        sampler = LengthGroupedBatchSampler([5, 9], batch_size=1, seed=0, world_size=3, rank=rank)
        sampler.set_epoch(0)
        (share,) = sampler.local_batches()
        shares.append((share.real_size, share.global_size, len(share.indices)))
    # Two sentences, three processes: the third takes part with one repeated, weightless sentence.
    assert shares == [(1, 2, 1), (1, 2, 1), (0, 2, 1)]


def test_steps_per_epoch_and_plan_count_short_batches_and_windows():
    assert optimizer_steps_per_epoch(100, 16, 1, 1) == 7
    assert optimizer_steps_per_epoch(100, 8, 2, 1) == 7  # the same global batch of 16
    assert optimizer_steps_per_epoch(100, 16, 1, 3) == 3
    assert planned_steps(100, TrainingConfig(batch_size=16, epochs=3)) == 21
    assert planned_steps(100, TrainingConfig(batch_size=16, epochs=3, max_steps=5)) == 5


@pytest.mark.parametrize("schedule, expected", [
    ("linear", [0.5, 1.0, 0.75, 0.5, 0.25, 0.0]),
    ("cosine", [0.5, 1.0, 0.8535534, 0.5, 0.1464466, 0.0]),
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_schedules_warm_up_by_ratio_then_decay_as_named(schedule, expected):
    model = torch.nn.Linear(4, 2)
    training = TrainingConfig(learning_rate=1.0, lr_schedule=schedule, warmup_ratio=0.3,
                              warmup_steps=500)
    optimizer = build_optimizer(model, training, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, training, total_steps=6)  # warm-up: round(1.8) = 2
    rates = []
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert np.allclose(rates, expected, atol=1e-6)


def test_fused_adamw_is_used_when_asked_and_matches_foreach():
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer(model, TrainingConfig(learning_rate=0.1, fused_adamw=fused),
                                  torch.device("cpu"))
                  for model, fused in zip(models, (True, False))]
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults["fused"]
    inputs = torch.randn(16, 8)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers):
            model(inputs).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    assert torch.allclose(models[0].weight, models[1].weight, atol=1e-6)


def test_mixed_precision_auto_follows_the_cpu_and_fp16_on_cpu_is_refused():
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    assert auto.mode == ("bf16" if cpu_has_native_bf16() else "no")
    assert resolve_precision("no", cpu).dtype is None
    with resolve_precision("bf16", cpu).autocast():
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 autocast needs a GPU"):
        resolve_precision("fp16", cpu)


def test_a_diverging_run_stops_with_the_step_and_keeps_its_last_checkpoint(tmp_path):
    config = ExperimentConfig.from_dict(tiny_config(training={"mixed_precision": "no"},
                                                    logging={"save_steps": 1}))
    splits = prepare_splits(config.data, config.seed)
    built = ModelFactory.create(config.model, splits.label_names, splits.train.texts)
    forward, calls = built.model.forward, []

    def overflowing_forward(*args, **kwargs):  # an overflow from the fourth batch on
        output = forward(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 4:
            output.logits = output.logits * float("inf")
        return output

    built.model.forward = overflowing_forward
    cpu = torch.device("cpu")
    trainer = ClassifierTrainer(built.model, built.tokenizer, splits, config, tmp_path,
                                TrackerSet([]), World(0, 1, cpu), resolve_precision("no", cpu))
    with pytest.raises(NonFiniteLoss, match=r"became nan at step 4 \(epoch 1\).*learning_rate"):
        trainer.train()
    kept = sorted((tmp_path / "checkpoints").glob("step-*"))
    assert [path.name for path in kept] == ["step-000002", "step-000003"]
    weights = load_file(kept[-1] / "model" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert trainer.state.global_step == 3  # the bad step was never applied


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", str(REPO_ROOT / "run_experiment.py"), *args]
    environment = {**cli_environment(), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=600)


def final_weights(run_dir: Path, checkpoint: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / checkpoint / "model" / "model.safetensors")


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(tmp_path,
                                                                                capsys):
    """gloo on CPU: 2 processes x batch 8 against 1 process x batch 16, dropout off, fp32."""
    common = {"model": {"dropout": 0.0}, "logging": {"tensorboard": False, "save_steps": 4}}
    single = write_config(tmp_path, tiny_config(training={"batch_size": 16,
                                                          "mixed_precision": "no"}, **common),
                          "single.yaml")
    pair = write_config(tmp_path, tiny_config(training={"batch_size": 8, "mixed_precision": "no"},
                                              **common), "pair.yaml")
    # The one-process reference in a process of its own, as the pair's are: the thread count
    # of a process changes the order of float sums, and the predictions must match exactly.
    run_cli(str(single), "--output-dir", str(tmp_path / "runs"), "--run-id", "single",
            check=True)
    completed = torchrun(str(pair), "--output-dir", str(tmp_path / "runs"), "--run-id", "pair")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["pair", "single"]
    assert completed.stdout.count("Summary of pair") == 1  # only the main process reports

    one, two = read_results(tmp_path / "runs" / "single"), read_results(tmp_path / "runs" / "pair")
    assert two["training"]["world_size"] == 2 and two["training"]["global_batch_size"] == 16
    assert one["training"]["total_steps"] == two["training"]["total_steps"] == 12
    for split in ("eval", "test"):
        assert two[split]["loss"] == pytest.approx(one[split]["loss"], abs=1e-5)
        assert two[split]["accuracy"] == one[split]["accuracy"]
    weights_one, weights_two = final_weights(tmp_path / "runs" / "single", "step-000012"), \
        final_weights(tmp_path / "runs" / "pair", "step-000012")
    assert max(float((weights_one[name] - weights_two[name]).abs().max())
               for name in weights_one) < 1e-5
    # Evaluation gathered every test sentence exactly once, in order.
    rows = (tmp_path / "runs" / "pair" / "predictions" / "test_predictions.csv").read_text()
    assert rows == (tmp_path / "runs" / "single" / "predictions" / "test_predictions.csv"
                    ).read_text()

    # A crash after step 8: resumed by two processes, it ends where the uninterrupted run did.
    pair_dir = tmp_path / "runs" / "pair"
    shutil.rmtree(pair_dir / "checkpoints" / "step-000012")
    shutil.rmtree(pair_dir / "final_model")
    capsys.readouterr()
    assert main(["resume", str(pair_dir)]) == 1  # one process may not resume a pair's run
    assert f"torchrun --nproc_per_node 2 run_experiment.py resume {pair_dir}\n" in \
        capsys.readouterr().err
    resumed = torchrun("resume", str(pair_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = read_results(pair_dir)
    assert after["metadata"]["resumed_from_step"] == 8 and after["status"] == "completed"
    assert after["test"]["loss"] == pytest.approx(two["test"]["loss"], abs=1e-6)
    resumed_weights = final_weights(pair_dir, "step-000012")
    assert all(torch.equal(resumed_weights[name], weights_two[name]) for name in weights_two)
    assert (pair_dir / "final_model" / "config.json").is_file()


def test_dataloader_workers_collate_the_same_batches_as_the_training_process(tmp_path):
    results = []
    for workers in (0, 2):
        config = ExperimentConfig.from_dict(tiny_config(
            experiment_name=f"workers{workers}", training={"num_workers": workers, "epochs": 1},
            logging={"tensorboard": False}))
        run_dir = run_experiment(config, tmp_path)
        results.append(read_results(run_dir))
    assert results[0]["eval"] == results[1]["eval"] and results[0]["test"] == results[1]["test"]
    assert results[0]["training"]["final_train_loss"] == results[1]["training"]["final_train_loss"]
