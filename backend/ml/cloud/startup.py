"""The VM's startup script: a header of shell variables above the fixed body ``startup.sh``.

On a VM the defaults apply (install the pinned torch from the wheel index of the CUDA build that
fits the GPU and the image's driver, :mod:`backend.ml.cloud.cuda_builds`, then the project and
its dependencies; wait for the GPU and run a matmul on it; train with ``training.device=cuda``,
through ``torchrun`` on all GPUs when there are several; delete the VM at the end). Tests render
the same script with a no-op install, the local virtual environment's python, no GPU check and
emulator endpoints, and run it in a temporary directory.

>>> script = render_startup_script(StartupSettings(run_id="x_3f9a1c", bucket="b", project="p",
...                                                zone="us-central1-a", instance="mb-x-3f9a1c-0"))
>>> script.startswith("#!/bin/bash")
True
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

BODY = Path(__file__).with_name("startup.sh")
# Installed into the image's python before the project (the code tarball is fetched with it).
VM_PREPARE = ("python3 -m pip install --quiet --upgrade pip && python3 -m pip install --quiet "
              "'google-cloud-storage>=2.18,<4' 'google-cloud-compute>=1.20,<2'")
# The common-cu* Deep Learning VM images carry the NVIDIA driver but no torch: install the
# version pyproject.toml pins from the wheel index of the CUDA build chosen for the GPU and the
# driver (TORCH_INDEX), run in the unpacked code,
VM_TORCH_INSTALL = ("TORCH_PIN=\"$(grep -oE '\"torch==[^\"]+\"' pyproject.toml | tr -d '\"')\" "
                    "&& python3 -m pip install --quiet \"${TORCH_PIN:-torch}\" "
                    "${TORCH_INDEX:+--index-url \"${TORCH_INDEX}\"}")
# then the project with its runtime dependencies (the pinned torch is already there, so pip
# keeps the CUDA build).
VM_INSTALL = "python3 -m pip install --quiet -e ."
# Only endpoints may be passed to the script's environment, never credentials.
_ALLOWED_ENVIRONMENT = {"STORAGE_EMULATOR_HOST", "MEDIA_BIAS_COMPUTE_ENDPOINT",
                        "GCE_METADATA_HOST", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                        "WANDB_MODE", "TOKENIZERS_PARALLELISM", "PYTHONPATH"}
_SECRET_LOOKING = re.compile(r"(key|token|secret|password|credential)", re.IGNORECASE)
# The Secret Manager secret the VM reads the W&B key from when logging.wandb is on.
WANDB_API_KEY_SECRET = "wandb-api-key"


@dataclass
class StartupSettings:
    """The variables of the startup script (names and numbers only)."""

    run_id: str
    bucket: str
    project: str
    zone: str
    instance: str
    work_dir: str = "/opt/media-bias"
    python: str = "python3"
    prepare_cmd: str = VM_PREPARE
    torch_install_cmd: str = VM_TORCH_INSTALL
    install_cmd: str = VM_INSTALL
    sync_interval: float = 120.0     # seconds between uploads of the run directory
    wandb_secret: str = ""           # Secret Manager secret holding the W&B key; empty: none
    gpu_count: int = 1               # > 1: torchrun --standalone --nproc_per_node=gpu_count
    check_gpu: bool = True           # wait for the driver, require torch to see gpu_count GPUs
    gpu_wait_seconds: int = 600      # how long the NVIDIA driver may take to come up
    train_device: str = "cuda"       # --set training.device=... of a new run
    torch_index: str = ""            # pip index of the CUDA torch build; empty: PyPI
    torch_build_reason: str = ""     # why that build (shown in the VM's log and --dry-run)
    self_delete: bool = True
    poweroff_cmd: str = "shutdown -h now"   # when self-deletion fails; maxRunDuration backs it
    environment: dict = field(default_factory=dict)


def render_startup_script(settings: StartupSettings) -> str:
    """The complete bash script for one VM."""
    for name, value in settings.environment.items():
        if name not in _ALLOWED_ENVIRONMENT or _SECRET_LOOKING.search(str(value)):
            raise ValueError(f"{name} may not be passed to the startup script (only endpoints)")
    variables = {
        "RUN_ID": settings.run_id, "BUCKET": settings.bucket, "PROJECT": settings.project,
        "ZONE": settings.zone, "INSTANCE": settings.instance, "WORK_DIR": settings.work_dir,
        "PYTHON": settings.python, "PREPARE_CMD": settings.prepare_cmd,
        "TORCH_INSTALL_CMD": settings.torch_install_cmd, "INSTALL_CMD": settings.install_cmd,
        "SYNC_INTERVAL": f"{settings.sync_interval:g}",
        "WANDB_SECRET": settings.wandb_secret, "SELF_DELETE": "1" if settings.self_delete else "0",
        "POWEROFF_CMD": settings.poweroff_cmd, "GPU_COUNT": str(settings.gpu_count),
        "CHECK_GPU": "1" if settings.check_gpu else "0",
        "GPU_WAIT_SECONDS": str(settings.gpu_wait_seconds),
        "TRAIN_DEVICE": settings.train_device, "TORCH_INDEX": settings.torch_index,
        "TORCH_BUILD_REASON": settings.torch_build_reason,
    }
    lines = ["#!/bin/bash", f"# media-bias cloud run {settings.run_id}: generated by "
             f"backend/ml/cloud/startup.py"]
    lines += [f"{name}={shlex.quote(value)}" for name, value in variables.items()]
    lines += [f"export {name}={shlex.quote(str(value))}"
              for name, value in sorted(settings.environment.items())]
    lines.append("export GOOGLE_CLOUD_PROJECT=\"${PROJECT}\"")
    return "\n".join(lines) + "\n\n" + BODY.read_text(encoding="utf-8")
