"""The VM's startup script as a CPU machine runs it, against the storage emulator and the fake
Compute endpoint, for the tests of what a cloud run does on its VM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from backend.ml.cloud.startup import StartupSettings, render_startup_script
from backend.ml.config import ExperimentConfig
from backend.ml.config.loading import config_from_dict

from .configs import tiny_config

PROJECT = "test-project"
RUN_ID = "tiny_cloud_5e1f00"
ZONE = "us-central1-a"


def tiny_cloud_config() -> ExperimentConfig:
    """One short epoch that still leaves several checkpoints for the VM to sync."""
    return config_from_dict(tiny_config(
        training={"epochs": 1},
        data={"max_samples": 120},
        logging={"save_steps": 2, "log_steps": 2, "tensorboard": False}))


def startup_script(bucket: str, work_dir: Path, instance: str, compute_url: str,
                   **settings_overrides) -> Path:
    """The VM's script as a CPU machine runs it: no GPU check, training.device=cpu."""
    environment = {"STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
                   "MEDIA_BIAS_COMPUTE_ENDPOINT": compute_url, "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
                   "TOKENIZERS_PARALLELISM": "false"}
    environment.update(settings_overrides.pop("environment", {}))
    options: dict[str, Any] = dict(check_gpu=False, train_device="cpu", gpu_count=1,
                                   prepare_cmd="true", torch_install_cmd="true",
                                   install_cmd="true")
    options.update(settings_overrides)
    settings = StartupSettings(
        run_id=RUN_ID, bucket=bucket, project=PROJECT, zone=ZONE, instance=instance,
        work_dir=str(work_dir), python=sys.executable, sync_interval=1,
        poweroff_cmd="echo poweroff-would-run", environment=environment, **options)
    path = work_dir.parent / f"{instance}.sh"
    path.write_text(render_startup_script(settings), encoding="utf-8")
    return path


def run_vm(script: Path, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    """Run the script as the VM would; ``path_prefix`` holds stand-ins (nvidia-smi, torchrun)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("WANDB_API_KEY", "PYTHONPATH")}
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=script.parent)


def boot_instance(fake, zone: str, name: str) -> None:
    """Put the VM the script will delete into the fake, as Compute Engine would have it."""
    fake.instances[(zone, name)] = {"name": name, "status": "RUNNING", "labels": {}}
