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
