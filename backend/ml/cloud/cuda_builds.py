"""Which CUDA build of torch the VM installs: from the GPU's compute capability and the image's
NVIDIA driver, never from the image's name.

Sources, checked December 2026:

- PyTorch's published wheels (https://download.pytorch.org/whl/<build>/torch/ and the release
  compatibility matrix): torch 2.13 ships CUDA 12.6 (``cu126``) and CUDA 13.0 (``cu130``)
  builds (13.2 experimental); no ``cu129`` build after 2.9. CUDA 13 dropped Volta and Pascal
  (compute capability < 7.5): since torch 2.11 only the ``cu126`` builds carry their kernels,
  and PyTorch has announced that the ``cu126`` builds end after 2.14.
- NVIDIA, "CUDA Minor Version Compatibility"
  (https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html): a CUDA
  13.x application needs driver >= 580, a CUDA 12.x one >= 525.
- Deep Learning VM families name their driver branch: ``common-cu129-ubuntu-2204-nvidia-580``.

>>> choose_build("nvidia-tesla-v100", "common-cu129-ubuntu-2204-nvidia-580", "2.13.0").build.name
'cu126'
>>> choose_build("nvidia-l4", "common-cu129-ubuntu-2204-nvidia-580", "2.13.0").build.name
'cu130'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .catalog import GPUS, GpuSpec

WHEEL_INDEX = "https://download.pytorch.org/whl"
PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
LATEST_TORCH = (99, 0)  # "still published": no last version announced


@dataclass(frozen=True)
class CudaBuild:
    """One CUDA build of torch on PyTorch's wheel index (``WHEEL_INDEX/<name>``)."""

    name: str                            # cu126: the index path and the wheels' local version
    cuda: str                            # torch.version.cuda of these wheels
    min_driver: int                      # NVIDIA driver branch it needs at least
    min_capability: tuple[int, int]      # oldest GPU architecture it has kernels for
    max_capability: tuple[int, int]      # newest
    first_torch: tuple[int, int]         # torch versions (major, minor) that publish it
    last_torch: tuple[int, int]

    def publishes(self, torch_version: tuple[int, int]) -> bool:
        return self.first_torch <= torch_version <= self.last_torch

    def runs_on(self, capability: tuple[int, int]) -> bool:
        return self.min_capability <= capability <= self.max_capability

    @property
    def index_url(self) -> str:
        return f"{WHEEL_INDEX}/{self.name}"


# Newest first: of the builds that fit, the VM gets the first.
BUILDS: tuple[CudaBuild, ...] = (
    CudaBuild("cu130", "13.0", 580, (7, 5), (12, 0), (2, 9), LATEST_TORCH),
    CudaBuild("cu126", "12.6", 525, (5, 0), (9, 0), (2, 6), (2, 14)),
)


@dataclass(frozen=True)
class BuildChoice:
    """The build the VM installs, and why (for ``--dry-run`` and the startup script)."""

    build: CudaBuild
    torch_version: str
    reason: str


def pinned_torch(pyproject: Path = PYPROJECT) -> str:
    """The ``torch==X`` version pyproject.toml pins (the VM installs the same one)."""
    match = re.search(r'"torch==([^"]+)"', pyproject.read_text(encoding="utf-8"))
    if not match:
        raise ValueError(f"{pyproject} pins no torch version (torch==X.Y.Z)")
    return match.group(1)


def image_driver(image_family: str) -> int | None:
    """The NVIDIA driver branch a Deep Learning VM family names (``...-nvidia-580`` -> 580)."""
    match = re.search(r"-nvidia-(\d+)", image_family)
    return int(match.group(1)) if match else None


def _minor(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def _capability(spec: GpuSpec) -> str:
    return f"{spec.capability[0]}.{spec.capability[1]}"


def build_problems(gpu_type: str, image_family: str, torch_version: str) -> list[str]:
    """Why no torch build runs on this GPU with this image (dotted paths); [] when one does."""
    spec = GPUS.get(gpu_type)
    if spec is None:
        return []  # reported by catalog.check_machine_and_gpu
    driver = image_driver(image_family)
    version = _minor(torch_version)
    published = [build for build in BUILDS if build.publishes(version)]
    for_gpu = [build for build in published if build.runs_on(spec.capability)]
    if not for_gpu:
        turing = ", ".join(name for name, other in GPUS.items() if other.capability >= (7, 5))
        older = [f"{build.name} (torch {build.first_torch[0]}.{build.first_torch[1]} to "
                 f"{build.last_torch[0]}.{build.last_torch[1]})" for build in BUILDS
                 if build.runs_on(spec.capability) and build.last_torch < LATEST_TORCH]
        return [f"cloud.gpu_type: {spec.display} ({gpu_type}, compute capability "
                f"{_capability(spec)}) has no torch {torch_version} build: the ones published "
                f"({', '.join(build.name for build in published) or 'none'}) lack kernels for "
                f"it. Choose a Turing-or-newer GPU ({turing})"
                + (f", or pin a torch that still has {', '.join(older)} in pyproject.toml"
                   if older else "")]
    if driver is not None and not any(driver >= build.min_driver for build in for_gpu):
        needed = min(build.min_driver for build in for_gpu)
        return [f"cloud.image_family: {image_family!r} carries NVIDIA driver {driver}; torch "
                f"{torch_version} for {spec.display} needs "
                f"{' or '.join(build.name for build in for_gpu)}, which needs driver >= "
                f"{needed}. Choose a family ending in -nvidia-{needed} or newer, e.g. "
                f"common-cu129-ubuntu-2204-nvidia-580"]
    return []


def choose_build(gpu_type: str, image_family: str, torch_version: str) -> BuildChoice:
    """The newest build that publishes ``torch_version``, has kernels for the GPU and runs on
    the image's driver. Raises ValueError (the dotted problem) when none does."""
    problems = build_problems(gpu_type, image_family, torch_version)
    if problems or gpu_type not in GPUS:
        raise ValueError("; ".join(problems) or f"cloud.gpu_type: unknown GPU {gpu_type!r}")
    spec, driver = GPUS[gpu_type], image_driver(image_family)
    fitting = [build for build in BUILDS if build.publishes(_minor(torch_version))
               and build.runs_on(spec.capability)]
    if driver is None:  # a family that names no driver: the build that needs the least
        build = min(fitting, key=lambda build: build.min_driver)
        why = (f"the image family names no NVIDIA driver, so {build.name} (CUDA {build.cuda}), "
               f"the build with kernels for it that needs the oldest driver (>= "
               f"{build.min_driver})")
    else:
        build = next(build for build in fitting if driver >= build.min_driver)
        why = (f"the image carries NVIDIA driver {driver}; {build.name} (CUDA {build.cuda}) "
               f"is the newest build of torch {torch_version} with kernels for it that this "
               f"driver runs (driver >= {build.min_driver})")
    # No apostrophe: the reason travels shell-quoted in the startup script's header.
    reason = f"{spec.display} has compute capability {_capability(spec)}, {why}"
    return BuildChoice(build, torch_version, reason)
