"""CUDA paths, run by ``scripts/gpu_check.sh`` on a machine with an NVIDIA GPU (marked ``gpu``;
skipped elsewhere, which is every CI machine of this project)."""

from __future__ import annotations

import pytest
import torch

from backend.ml.cli import main
from backend.ml.run_directory import read_results
from backend.ml.training.precision import enable_tf32, resolve_precision
from support.configs import tiny_config, write_config
from support.runs import only_run_dir

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_auto_precision_is_bf16_exactly_where_the_gpu_computes_it():
    precision = resolve_precision("auto", torch.device("cuda"))
    assert precision.mode == ("bf16" if torch.cuda.is_bf16_supported() else "no")
    with precision.autocast():
        product = torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")
    assert product.dtype == (torch.bfloat16 if precision.mode == "bf16" else torch.float32)
    assert float(product[0, 0]) == 8.0


def test_tf32_switch_sets_cudas_matmul_flag():
    enable_tf32(True, torch.device("cuda"))
    assert torch.backends.cuda.matmul.allow_tf32
    enable_tf32(False, torch.device("cuda"))
    assert not torch.backends.cuda.matmul.allow_tf32


def test_a_run_trains_on_the_gpu_in_the_precision_it_reports(tmp_path):
    config = write_config(tmp_path, tiny_config(training={"device": "cuda", "epochs": 1}))
    assert main([str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    results = read_results(only_run_dir(tmp_path / "runs"))
    assert results["metadata"]["device"].startswith("cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported() else "no"
    assert results["training"]["mixed_precision"] == expected
    assert results["status"] == "completed"


def test_pretrained_weights_evaluate_on_the_gpu_with_the_hub_switched_off(tmp_path, monkeypatch):
    # Loaded on a GPU, transformers would swap the activations for kernels fetched from the hub;
    # offline, the first evaluation (the first forward pass in inference mode) would fail.
    assert main([str(write_config(tmp_path, tiny_config(training={"epochs": 1}))),
                 "--output-dir", str(tmp_path / "cpu")]) == 0
    weights = only_run_dir(tmp_path / "cpu") / "final_model"
    config = tiny_config(training={"device": "cuda", "epochs": 1},
                         logging={"tensorboard": False, "save_steps": 0})
    config["model"] = {"architecture": "bert", "model_name": str(weights), "num_labels": 3}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([str(write_config(tmp_path, config, "gpu.yaml")),
                 "--output-dir", str(tmp_path / "gpu")]) == 0
    results = read_results(only_run_dir(tmp_path / "gpu"))
    assert results["status"] == "completed" and results["metadata"]["device"].startswith("cuda")
    assert 0.0 <= results["test"]["f1_macro"] <= 1.0
