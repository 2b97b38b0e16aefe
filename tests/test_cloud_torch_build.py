"""The torch the VM installs has CUDA kernels for its GPU: the build is chosen from the GPU's
compute capability and the image's driver, refused before anything is created when none fits,
installed by the real pip from an index laid out like download.pytorch.org, and proven by a
matmul on every GPU (where there is one; the report in the completion marker is checked in
tests/test_cloud_vm_safety.py)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from backend.ml.cloud import agent, cuda_builds
from backend.ml.cloud.commands import CloudTarget, cloud_run_command
from backend.ml.cloud.launch import cloud_problems
from backend.ml.cloud.orchestrate import CloudRun, startup_for
from backend.ml.config.loading import config_from_dict
from support.cli import REPO_ROOT
from support.cloud import (
    PROJECT,
    RUN_ID,
    ZONE,
)
from support.configs import tiny_config, write_config
from support.fakes.fake_compute import CURRENT_FAMILY

PINNED = cuda_builds.pinned_torch()
OLD_DRIVER_FAMILY = "common-cu128-ubuntu-2204-nvidia-570"


@pytest.mark.parametrize("gpu_type, family, build", [
    ("nvidia-tesla-v100", CURRENT_FAMILY, "cu126"),   # Volta: CUDA 13 has no kernels for it
    ("nvidia-tesla-p100", CURRENT_FAMILY, "cu126"),
    ("nvidia-tesla-t4", CURRENT_FAMILY, "cu130"),
    ("nvidia-l4", CURRENT_FAMILY, "cu130"),
    ("nvidia-tesla-a100", CURRENT_FAMILY, "cu130"),
    ("nvidia-l4", OLD_DRIVER_FAMILY, "cu126"),         # driver 570 cannot run CUDA 13
])
def test_the_build_follows_the_gpu_and_the_driver_not_the_image_name(gpu_type, family, build):
    chosen = cuda_builds.choose_build(gpu_type, family, PINNED)
    assert chosen.build.name == build
    assert chosen.build.index_url == f"https://download.pytorch.org/whl/{build}"


@pytest.mark.parametrize("gpu_type, family, torch_version, message", [
    ("nvidia-tesla-v100", CURRENT_FAMILY, "2.15.0",
     "cloud.gpu_type: NVIDIA V100 (nvidia-tesla-v100, compute capability 7.0) has no torch "
     "2.15.0 build: the ones published (cu130) lack kernels for it. Choose a Turing-or-newer "
     "GPU (nvidia-tesla-t4, nvidia-l4, nvidia-tesla-a100), or pin a torch that still has cu126 "
     "(torch 2.6 to 2.14) in pyproject.toml"),
    ("nvidia-l4", OLD_DRIVER_FAMILY, "2.15.0",
     f"cloud.image_family: '{OLD_DRIVER_FAMILY}' carries NVIDIA driver 570; torch 2.15.0 for "
     f"NVIDIA L4 needs cu130, which needs driver >= 580. Choose a family ending in -nvidia-580"),
])
def test_a_combination_no_build_fits_is_refused_with_what_to_choose(
        gpu_type, family, torch_version, message):
    problems = cuda_builds.build_problems(gpu_type, family, torch_version)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_cloud_problems_refuses_an_image_whose_driver_no_build_runs_on():
    config = config_from_dict(tiny_config(
        training={"device": "auto"},
        cloud={"gpu_type": "nvidia-tesla-t4",
               "image_family": "common-cu118-ubuntu-2004-nvidia-470"}))
    assert cloud_problems(config) == [
        f"cloud.image_family: 'common-cu118-ubuntu-2004-nvidia-470' carries NVIDIA driver 470; "
        f"torch {PINNED} for NVIDIA T4 needs cu130 or cu126, which needs driver >= 525. Choose "
        f"a family ending in -nvidia-525 or newer, e.g. common-cu129-ubuntu-2204-nvidia-580"]


def test_dry_run_shows_which_build_is_installed_and_why(fake_compute, tmp_path, capsys):
    config = write_config(tmp_path, tiny_config(
        training={"device": "auto"},
        cloud={"project": PROJECT, "gpu_type": "nvidia-tesla-v100", "zones": [ZONE]}))
    target = CloudTarget(configs=[str(config)], runs_dir=tmp_path / "runs")
    assert cloud_run_command(target, run_id="build_d1d1d1", dry_run=True) == 0
    out = capsys.readouterr().out
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cu126" in out
    assert ("NVIDIA V100 has compute capability 7.0, the image carries NVIDIA driver 580; "
            "cu126 (CUDA 12.6) is the newest build of torch") in out
    assert "cu129" not in out.split("TORCH_INDEX=")[1].split("\\n")[0]


# ---- the real pip against an index laid out like download.pytorch.org/whl/<build>/ ----------

def _dummy_torch_wheel(directory: Path, version: str) -> str:
    """A tiny wheel named and versioned like PyTorch's (``torch-2.13.0+cu126``)."""
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(directory / name, "w") as wheel:
        wheel.writestr("torch/__init__.py", f"__version__ = {version!r}\n")
        wheel.writestr(f"{info}/METADATA",
                       f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return name


@pytest.fixture
def wheel_index(tmp_path, monkeypatch):
    """A PEP 503 index on loopback holding torch ``<pin>+<build>`` for every build of the
    table under ``/<build>/torch/``; returns the paths pip asked for."""
    root = tmp_path / "whl"
    for build in cuda_builds.BUILDS:
        project = root / build.name / "torch"
        project.mkdir(parents=True)
        wheel = _dummy_torch_wheel(project, f"{PINNED}+{build.name}")
        (project / "index.html").write_text(
            f'<html><body><a href="{wheel.replace("+", "%2B")}">{wheel}</a></body></html>')
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            asked.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(cuda_builds, "WHEEL_INDEX", f"http://127.0.0.1:{server.server_address[1]}")
    yield asked
    server.shutdown()
    server.server_close()


def _pip_environment(tmp_path: Path) -> dict:
    """This machine's python as the image's ``python3``; pip resolves and downloads but
    installs nothing (``--dry-run``), sees no other index or wheel directory, and keeps no
    cache between runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/bash\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PIP_CONFIG_FILE=os.devnull, PIP_DRY_RUN="1",
               PIP_IGNORE_INSTALLED="1", PIP_NO_DEPS="1", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_CACHE_DIR=str(tmp_path / "pip-cache"))
    return env


@pytest.mark.parametrize("gpu_type, build", [
    ("nvidia-tesla-v100", "cu126"), ("nvidia-tesla-t4", "cu130"), ("nvidia-l4", "cu130"),
    ("nvidia-tesla-a100", "cu130")])
def test_the_vms_install_command_fetches_the_pinned_torch_of_the_chosen_build(
        wheel_index, tmp_path, gpu_type, build):
    run = CloudRun(run_id=RUN_ID, project=PROJECT, region="us-central1", bucket="b",
                   zones=[ZONE], spec={"gpu_type": gpu_type, "image_family": CURRENT_FAMILY,
                                       "gpu_count": 1})
    header = startup_for(run, ZONE, "mb-x-0").partition("\n\n")[0]
    code = tmp_path / "code"  # the unpacked code: the install reads the pin from it
    code.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", code)
    install = tmp_path / "install.sh"
    install.write_text(f'{header}\ncd {code} && eval "${{TORCH_INSTALL_CMD}}"\n')
    completed = subprocess.run(["bash", str(install)], capture_output=True, text=True,
                               env=_pip_environment(tmp_path), timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert wheel_index == [f"/{build}/torch/",
                           f"/{build}/torch/torch-{PINNED}%2B{build}-py3-none-any.whl"]


def test_the_project_install_brings_only_runtime_dependencies_to_the_vm():
    import tomllib

    from backend.ml.cloud.startup import VM_INSTALL

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert VM_INSTALL == "python3 -m pip install --quiet -e ."  # no [test] extra
    assert not any(requirement.startswith(("pytest", "playwright", "gcp-storage-emulator"))
                   for requirement in project["dependencies"])


# ---- the GPU check on the VM -------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_gpu_check_runs_a_matmul_on_every_gpu(tmp_path):
    report_file = tmp_path / "gpu-check.json"
    assert agent.main(["gpu-check", "--expect", str(torch.cuda.device_count()),
                       "--report", str(report_file)]) == 0
    report = agent._read_report(str(report_file))
    assert report["ok"] and report["cuda"] == torch.version.cuda
    assert len(report["devices"]) == torch.cuda.device_count()
    for index, device in enumerate(report["devices"]):
        major, minor = torch.cuda.get_device_capability(index)
        assert device["capability"] == f"{major}.{minor}"
        assert 0 <= device["matmul_max_error"] <= agent.MATMUL_TOLERANCE
