"""What Compute Engine offers: which GPU fits which machine type, and in which zones.

The tables are a snapshot of https://cloud.google.com/compute/docs/gpus and
https://cloud.google.com/compute/docs/gpus/gpu-regions-zones (January 2025); the compute
capabilities are NVIDIA's (https://developer.nvidia.com/cuda-gpus, checked December 2026) and
choose the torch build the VM installs (:mod:`backend.ml.cloud.cuda_builds`). They let a config
be checked and priced offline (``--dry-run``); a real launch asks the Compute API which zones
offer the GPU (:func:`backend.ml.cloud.compute.zones_offering`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.loading import did_you_mean


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator type and the machine types it can be attached to."""

    name: str
    display: str
    memory_gb: int
    series: str                        # machine series the GPU attaches to: n1, a2 or g2
    counts: tuple[int, ...]            # valid GPUs per VM (N1) or per machine type (bundled)
    bundled: dict[str, int]            # A2 / G2: machine type -> GPUs it comes with
    max_vcpus: dict[int, int]          # N1: GPU count -> most vCPUs allowed with it
    zones: dict[str, tuple[str, ...]]  # region -> zones offering it
    capability: tuple[int, int]        # CUDA compute capability: which torch builds have kernels


GPUS: dict[str, GpuSpec] = {spec.name: spec for spec in (
    GpuSpec("nvidia-tesla-t4", "NVIDIA T4", 16, "n1", (1, 2, 4), {}, {1: 48, 2: 48, 4: 96},
            {"us-central1": ("us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"),
             "us-east1": ("us-east1-c", "us-east1-d"), "us-west1": ("us-west1-a", "us-west1-b"),
             "europe-west4": ("europe-west4-a", "europe-west4-b", "europe-west4-c")},
            capability=(7, 5)),
    GpuSpec("nvidia-tesla-p4", "NVIDIA P4", 8, "n1", (1, 2, 4), {}, {1: 24, 2: 48, 4: 96},
            {"us-central1": ("us-central1-a", "us-central1-c"),
             "europe-west4": ("europe-west4-b", "europe-west4-c")},
            capability=(6, 1)),
    GpuSpec("nvidia-tesla-p100", "NVIDIA P100", 16, "n1", (1, 2, 4), {}, {1: 16, 2: 32, 4: 96},
            {"us-central1": ("us-central1-c", "us-central1-f"),
             "us-east1": ("us-east1-b", "us-east1-c"), "us-west1": ("us-west1-a", "us-west1-b"),
             "europe-west4": ("europe-west4-a",)},
            capability=(6, 0)),
    GpuSpec("nvidia-tesla-v100", "NVIDIA V100", 16, "n1", (1, 2, 4, 8), {},
            {1: 12, 2: 24, 4: 48, 8: 96},
            {"us-central1": ("us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"),
             "us-west1": ("us-west1-a", "us-west1-b"),
             "europe-west4": ("europe-west4-a", "europe-west4-b", "europe-west4-c")},
            capability=(7, 0)),
    GpuSpec("nvidia-l4", "NVIDIA L4", 24, "g2", (1, 2, 4, 8),
            {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
             "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4,
             "g2-standard-96": 8}, {},
            {"us-central1": ("us-central1-a", "us-central1-b", "us-central1-c"),
             "us-east1": ("us-east1-b", "us-east1-c", "us-east1-d"),
             "us-west1": ("us-west1-a", "us-west1-b", "us-west1-c"),
             "europe-west4": ("europe-west4-a", "europe-west4-b", "europe-west4-c")},
            capability=(8, 9)),
    GpuSpec("nvidia-tesla-a100", "NVIDIA A100 40GB", 40, "a2", (1, 2, 4, 8, 16),
            {"a2-highgpu-1g": 1, "a2-highgpu-2g": 2, "a2-highgpu-4g": 4, "a2-highgpu-8g": 8,
             "a2-megagpu-16g": 16}, {},
            {"us-central1": ("us-central1-a", "us-central1-b", "us-central1-c",
                             "us-central1-f"),
             "us-east1": ("us-east1-b",), "us-west1": ("us-west1-b",),
             "europe-west4": ("europe-west4-a", "europe-west4-b")},
            capability=(8, 0)),
)}

# N1 predefined types: vCPUs from the name (n1-standard-8 -> 8); the shared-core types take none.
N1_FAMILIES = ("n1-standard-", "n1-highmem-", "n1-highcpu-")
N1_SIZES = (1, 2, 4, 8, 16, 32, 64, 96)


def machine_series(machine_type: str) -> str:
    """``n1-standard-4`` -> ``n1``."""
    return machine_type.split("-", 1)[0]


def n1_vcpus(machine_type: str) -> int | None:
    """vCPUs of a predefined N1 type, or None when it is not one."""
    for family in N1_FAMILIES:
        if machine_type.startswith(family):
            size = machine_type[len(family):]
            if size.isdigit() and int(size) in N1_SIZES:
                return int(size)
    return None


def gpu_spec(gpu_type: str) -> GpuSpec | None:
    return GPUS.get(gpu_type)


def uses_guest_accelerators(gpu_type: str) -> bool:
    """N1 VMs name their GPUs in the request; A2 and G2 types come with theirs attached."""
    spec = GPUS.get(gpu_type)
    return spec is None or not spec.bundled


def check_machine_and_gpu(cloud) -> list[str]:
    """Problems with ``cloud.machine_type`` / ``gpu_type`` / ``gpu_count`` / ``zones``, dotted.

    >>> from backend.ml.config import CloudConfig
    >>> check_machine_and_gpu(CloudConfig(machine_type="n1-standard-4", gpu_type="nvidia-tesla-t4"))
    []
    """
    problems: list[str] = []
    spec = GPUS.get(cloud.gpu_type)
    if spec is None:
        problems.append(f"cloud.gpu_type: unknown GPU {cloud.gpu_type!r}"
                        f"{did_you_mean(cloud.gpu_type, GPUS)}; choose from {', '.join(GPUS)}")
        return problems
    series = machine_series(cloud.machine_type)
    if spec.bundled:
        if cloud.machine_type not in spec.bundled:
            problems.append(
                f"cloud.machine_type: {spec.display} ({spec.name}) comes only with the "
                f"{spec.series.upper()} machine types {', '.join(spec.bundled)}; got "
                f"{cloud.machine_type!r}")
        elif spec.bundled[cloud.machine_type] != cloud.gpu_count:
            problems.append(
                f"cloud.gpu_count: {cloud.machine_type} comes with "
                f"{spec.bundled[cloud.machine_type]} {spec.display} GPU(s); set gpu_count to "
                f"{spec.bundled[cloud.machine_type]}, got {cloud.gpu_count}")
    else:
        vcpus = n1_vcpus(cloud.machine_type)
        if series != "n1" or vcpus is None:
            problems.append(f"cloud.machine_type: {spec.display} ({spec.name}) attaches only to "
                            f"N1 machine types such as n1-standard-4 or n1-highmem-8; got "
                            f"{cloud.machine_type!r}")
        if cloud.gpu_count not in spec.counts:
            problems.append(f"cloud.gpu_count: {spec.display} VMs take "
                            f"{', '.join(map(str, spec.counts))} GPUs, got {cloud.gpu_count}")
        elif vcpus is not None and vcpus > spec.max_vcpus[cloud.gpu_count]:
            problems.append(f"cloud.machine_type: {cloud.machine_type} has {vcpus} vCPUs; with "
                            f"{cloud.gpu_count} {spec.display} at most "
                            f"{spec.max_vcpus[cloud.gpu_count]} are allowed")
    problems.extend(_check_zones(cloud, spec))
    return problems


def _check_zones(cloud, spec: GpuSpec) -> list[str]:
    problems = []
    for index, zone in enumerate(cloud.zones):
        if not zone.startswith(cloud.region + "-"):
            problems.append(f"cloud.zones[{index}]: zone {zone!r} is not in cloud.region "
                            f"{cloud.region!r}")
    known = spec.zones.get(cloud.region)
    if known is None:
        return problems  # region not in the snapshot: the Compute API decides at launch
    if not known:
        problems.append(f"cloud.gpu_type: {spec.name} is not offered in {cloud.region}")
    for index, zone in enumerate(cloud.zones):
        if zone.startswith(cloud.region + "-") and zone not in known:
            problems.append(f"cloud.zones[{index}]: {zone} does not offer {spec.name}; zones "
                            f"of {cloud.region} that do: {', '.join(known)}")
    return problems


def candidate_zones(cloud) -> list[str]:
    """Zones to try, in order: ``cloud.zones``, or every zone of the region offering the GPU."""
    if cloud.zones:
        return list(cloud.zones)
    spec = GPUS.get(cloud.gpu_type)
    return list(spec.zones.get(cloud.region, ())) if spec else []


def regions_offering(gpu_type: str) -> list[str]:
    spec = GPUS.get(gpu_type)
    return sorted(region for region, zones in spec.zones.items() if zones) if spec else []
