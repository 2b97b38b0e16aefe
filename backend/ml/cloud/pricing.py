"""Cost estimate of a cloud run, from a price file that names its source and date.

>>> prices = load_prices()
>>> estimate = estimate_cost(config, train_sentences=2938, prices=prices)  # doctest: +SKIP
>>> print(format_estimate(estimate))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..errors import UserError
from ..training.steps import global_batch_size, optimizer_steps_per_epoch, planned_steps

SHIPPED_PRICES = Path(__file__).with_name("prices.yaml")
HOURS_PER_MONTH = 730  # Compute Engine and Cloud Storage bill per GB-month of 730 hours
MAX_REPLACEMENTS = 5   # preempted VMs replaced per run at most (orchestrate.MAX_REPLACEMENTS)
# Planning figure for data-parallel training on N GPUs of one VM: N x this x one GPU's speed.
DATA_PARALLEL_EFFICIENCY = 0.85


class CostError(UserError):
    """The run cannot be priced, or costs more than the user allowed."""


@dataclass
class BucketCost:
    """The run directory in Cloud Storage and its download by ``cloud sync``, once per run.

    Checkpoints are planning sizes per model size class (weights and the two AdamW moments in
    fp32: 12 bytes per parameter); the bucket keeps ``save_total_limit`` of them plus the best
    one and the final model (weights only, a third of a checkpoint). A rotated checkpoint is
    deleted from the bucket, and soft delete bills it for ``soft_delete_days`` more.
    """

    checkpoint_gb: float
    checkpoints_written: int
    checkpoints_kept: int
    run_gb: float                   # the finished run directory: kept checkpoints + final model
    storage_usd: float              # the run directory while the VMs train (as if full at once)
    soft_delete_days: float
    soft_delete_usd: float          # rotated checkpoints billed for their soft-delete retention
    download_usd: float             # one `cloud sync` of the finished run to the laptop
    per_month_usd: float            # keeping the finished run in the bucket, not in the total

    @property
    def total(self) -> float:
        return self.storage_usd + self.soft_delete_usd + self.download_usd


@dataclass
class CostEstimate:
    """Hourly rates and the estimated total for both capacity kinds; ``chosen`` is what runs."""

    region: str
    machine_type: str
    gpu_type: str
    gpu_count: int
    boot_disk_gb: int
    machine_per_hour: dict          # {"on_demand": $, "spot": $}
    gpu_per_hour: dict              # per GPU
    disk_per_hour: float
    ip_per_hour: dict               # the external IPv4 address, {"on_demand": $, "spot": $}
    hourly: dict                    # machine + GPUs + disk + external IP
    train_sentences: int            # sentences seen in training (all epochs)
    eval_sentences: int
    throughput: float               # training sentences/s
    throughput_source: str
    startup_hours: float
    hours: float                    # estimated wall time, startup included
    total: dict                     # hourly * hours
    chosen: str                     # "spot" or "on_demand"
    budget_usd: float               # cloud.max_cost_usd
    max_run_hours: float            # cloud.max_run_hours
    budget_hours: float             # what the budget buys at the chosen rate
    cap_hours: float                # the first VM's maxRunDuration: budget_hours, at most
                                    # cloud.max_run_hours
    cap_total: float                # the most one VM can cost at the chosen rate
    worst_case: float               # every VM preempted just before the end, MAX_REPLACEMENTS
                                    # times, never past the budget; bucket included
    bucket: BucketCost
    price_source: str
    price_date: str

    def to_dict(self) -> dict:
        return asdict(self)


# Accelerator types that compute bf16 natively (Ampere and later): training.mixed_precision
# auto turns bf16 on there and stays in fp32 on the older T4, P4, P100 and V100.
BF16_GPU_TYPES = ("nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-l4", "nvidia-h100-80gb",
                  "nvidia-h100-mega-80gb", "nvidia-h200-141gb")


def runs_mixed_precision(mixed_precision: str, gpu_type: str) -> bool:
    """Whether a run with ``training.mixed_precision`` trains in fp16/bf16 on ``gpu_type``.

    >>> runs_mixed_precision("auto", "nvidia-tesla-v100"), runs_mixed_precision("auto", "nvidia-l4")
    (False, True)
    """
    if mixed_precision == "auto":
        return gpu_type in BF16_GPU_TYPES
    return mixed_precision != "no"


def load_prices(price_file: str | Path | None = None) -> dict:
    """The shipped price table, or ``price_file`` (same layout) when given."""
    path = Path(price_file) if price_file else SHIPPED_PRICES
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CostError(f"cloud.price_file: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise CostError(f"cloud.price_file: {path} is not valid YAML: {error}") from None
    missing = [key for key in ("source", "retrieved", "regions", "throughput")
               if not isinstance(data, dict) or key not in data]
    if missing:
        raise CostError(f"cloud.price_file: {path} lacks {', '.join(missing)} (see the shipped "
                        f"{SHIPPED_PRICES.name} for the layout)")
    data["_path"] = str(path)
    return data


def model_size_class(model) -> str:
    """tiny (randomly initialised), small (distil/mini/small), large, or base."""
    if not model.pretrained:
        return "tiny"
    name = model.model_name.lower()
    if "large" in name:
        return "large"
    if any(word in name for word in ("distil", "mini", "small", "tiny")):
        return "small"
    return "base"


def _rate(table: dict, kind: str, name: str, region: str, path: str) -> dict:
    try:
        entry = table[name]
        spot = entry.get("spot")  # None: no published spot price for it
        return {"on_demand": float(entry["on_demand"]),
                "spot": None if spot is None else float(spot)}
    except (KeyError, TypeError, ValueError, AttributeError):
        known = ", ".join(sorted(table)) if isinstance(table, dict) else "none"
        raise CostError(f"no {kind} price for {name!r} in {region} in {path} (priced: {known}); "
                        f"add it to a copy of the file and set cloud.price_file") from None


def training_throughput(config, prices: dict) -> tuple[float, str]:
    """Training sentences/s on the configured GPU and where that figure comes from."""
    cloud = config.cloud
    if cloud.throughput_samples_per_second:
        return (float(cloud.throughput_samples_per_second),
                "measured (cloud.throughput_samples_per_second)")
    size = model_size_class(config.model)
    try:
        value = float(prices["throughput"][cloud.gpu_type][size])
    except (KeyError, TypeError, ValueError):
        raise CostError(f"no throughput figure for {cloud.gpu_type} / {size} models in "
                        f"{prices['_path']}; set cloud.throughput_samples_per_second") from None
    source = f"table: {cloud.gpu_type}, {size} model"
    if cloud.gpu_count > 1:
        value *= cloud.gpu_count * DATA_PARALLEL_EFFICIENCY
        source += f", x{cloud.gpu_count} GPUs at {DATA_PARALLEL_EFFICIENCY:.0%} (data-parallel)"
    if runs_mixed_precision(config.training.mixed_precision, cloud.gpu_type):
        speedup = float(prices.get("mixed_precision_speedup", {}).get(cloud.gpu_type, 1.0))
        if speedup != 1.0:
            value *= speedup
            source += f", x{speedup:g} mixed precision"
    return value, source


def training_sentences(config, train_size: int, validation_size: int, test_size: int
                       ) -> tuple[int, int]:
    """Sentences passed forward+backward in training, and forward-only in evaluation."""
    training, gpus = config.training, config.cloud.gpu_count  # one process per GPU
    steps_per_epoch = optimizer_steps_per_epoch(train_size, training.batch_size, gpus,
                                                training.gradient_accumulation_steps)
    steps = planned_steps(train_size, training, gpus)
    trained = min(train_size * training.epochs, steps * global_batch_size(training, gpus))
    evaluations = math.ceil(steps / steps_per_epoch) if steps_per_epoch else 0
    if training.eval_steps:
        evaluations += steps // training.eval_steps
    return trained, evaluations * validation_size + test_size + validation_size


def hours_within_budget(left_usd: float, hourly_usd: float, max_run_hours: float) -> float:
    """How long one VM may run: what ``left_usd`` buys at ``hourly_usd``, at most the ceiling.

    >>> hours_within_budget(3.0, 1.5, 6.0), hours_within_budget(30.0, 1.5, 6.0)
    (2.0, 6.0)
    """
    if hourly_usd <= 0:
        return max_run_hours
    return max(0.0, min(max_run_hours, left_usd / hourly_usd))


def _region_prices(cloud, prices: dict) -> dict:
    region_prices = prices["regions"].get(cloud.region)
    if not isinstance(region_prices, dict):
        raise CostError(f"no prices for region {cloud.region!r} in {prices['_path']} (priced: "
                        f"{', '.join(sorted(prices['regions']))}); add the region to a copy of "
                        f"the file and set cloud.price_file")
    return region_prices


def _hourly_parts(cloud, prices: dict, region_prices: dict) -> dict:
    """$/hour of machine, GPU (per GPU), disk and external IP, and their sum per capacity kind."""
    machine = _rate(region_prices.get("machines", {}), "machine", cloud.machine_type,
                    cloud.region, prices["_path"])
    gpu = _rate(region_prices.get("gpus", {}), "GPU", cloud.gpu_type, cloud.region,
                prices["_path"])
    disk = cloud.boot_disk_gb * float(region_prices.get("disk_gb_month", 0.0)) / HOURS_PER_MONTH
    ip = {kind: float((region_prices.get("external_ip_per_hour") or {}).get(kind, 0.0))
          for kind in ("on_demand", "spot")}
    hourly = {kind: (None if machine[kind] is None or gpu[kind] is None else
                     machine[kind] + cloud.gpu_count * gpu[kind] + disk + ip[kind])
              for kind in ("on_demand", "spot")}
    if cloud.preemptible and hourly["spot"] is None:
        raise CostError(f"{prices['_path']} has no published spot price for {cloud.machine_type} "
                        f"with {cloud.gpu_type} in {cloud.region}; set cloud.preemptible: false, "
                        f"or add the spot price to a copy of the file and set cloud.price_file")
    return {"machine": machine, "gpu": gpu, "disk": disk, "ip": ip, "hourly": hourly}


def checkpoints_written(config, trained_sentences: int, training_hours: float) -> int:
    """Resumable checkpoints a run writes: one per epoch end, every ``logging.save_steps``
    optimiser steps and every ``logging.save_minutes``."""
    training, logging = config.training, config.logging
    steps = math.ceil(trained_sentences
                      / global_batch_size(training, config.cloud.gpu_count))
    written = training.epochs
    if logging.save_steps:
        written += steps // logging.save_steps
    if logging.save_minutes:
        written += int(training_hours * 60 // logging.save_minutes)
    return written


def bucket_cost(config, prices: dict, region_prices: dict, trained_sentences: int,
                hours: float, training_hours: float) -> BucketCost:
    """Cloud Storage and download of the run's directory (see :class:`BucketCost`)."""
    size = model_size_class(config.model)
    # Planning sizes, not prices: a price file without them uses the shipped ones.
    sizes = prices.get("checkpoint_gb") or load_prices()["checkpoint_gb"]
    try:
        checkpoint_gb = float(sizes[size])
    except (KeyError, TypeError, ValueError):
        raise CostError(f"no checkpoint_gb figure for {size} models in {prices['_path']} (see "
                        f"the shipped {SHIPPED_PRICES.name} for the layout)") from None
    storage_rate = float(region_prices.get("storage_gb_month", 0.0))
    written = checkpoints_written(config, trained_sentences, training_hours)
    kept = min(written, config.training.save_total_limit + 1)  # the best one is always kept
    run_gb = kept * checkpoint_gb + checkpoint_gb / 3
    retention_days = float(prices.get("soft_delete_days", 0.0))
    rotated_gb = (written - kept) * checkpoint_gb
    return BucketCost(
        checkpoint_gb=checkpoint_gb, checkpoints_written=written, checkpoints_kept=kept,
        run_gb=run_gb, storage_usd=run_gb * storage_rate * hours / HOURS_PER_MONTH,
        soft_delete_days=retention_days,
        soft_delete_usd=rotated_gb * storage_rate * retention_days * 24 / HOURS_PER_MONTH,
        download_usd=run_gb * float(region_prices.get("download_gb", 0.0)),
        per_month_usd=run_gb * storage_rate)


def estimate_cost(config, train_size: int, validation_size: int = 0, test_size: int = 0,
                  prices: dict | None = None) -> CostEstimate:
    """Price one run of ``config`` on its cloud section's machine, GPUs and disk, with its
    bucket storage and download.

    Hours = startup + training sentences / throughput + evaluation sentences / (throughput x
    eval_speedup); total = hours x (machine + gpu_count x GPU + disk + IP) per hour + bucket.
    """
    cloud = config.cloud
    prices = prices or load_prices(cloud.price_file)
    region_prices = _region_prices(cloud, prices)
    parts = _hourly_parts(cloud, prices, region_prices)
    hourly = parts["hourly"]
    throughput, throughput_source = training_throughput(config, prices)
    trained, evaluated = training_sentences(config, train_size, validation_size, test_size)
    startup = float(prices.get("startup_minutes", 0)) / 60
    eval_speedup = float(prices.get("eval_speedup", 1.0))
    training_hours = trained / throughput / 3600
    hours = startup + training_hours + evaluated / (throughput * eval_speedup) / 3600
    bucket = bucket_cost(config, prices, region_prices, trained, hours, training_hours)
    chosen = "spot" if cloud.preemptible else "on_demand"
    budget_hours = hours_within_budget(cloud.max_cost_usd, hourly[chosen], math.inf)
    cap_hours = min(budget_hours, cloud.max_run_hours)
    per_vm = hourly[chosen] * min(hours, cap_hours)
    vms = per_vm * (1 + MAX_REPLACEMENTS) if cloud.preemptible else per_vm
    return CostEstimate(
        region=cloud.region, machine_type=cloud.machine_type, gpu_type=cloud.gpu_type,
        gpu_count=cloud.gpu_count, boot_disk_gb=cloud.boot_disk_gb,
        machine_per_hour=parts["machine"], gpu_per_hour=parts["gpu"],
        disk_per_hour=parts["disk"], ip_per_hour=parts["ip"], hourly=hourly,
        train_sentences=trained,
        eval_sentences=evaluated, throughput=throughput, throughput_source=throughput_source,
        startup_hours=startup, hours=hours,
        total={kind: None if rate is None else rate * hours + bucket.total
               for kind, rate in hourly.items()},
        chosen=chosen, budget_usd=cloud.max_cost_usd, max_run_hours=cloud.max_run_hours,
        budget_hours=budget_hours,
        cap_hours=cap_hours, cap_total=hourly[chosen] * cap_hours,
        worst_case=min(vms, cloud.max_cost_usd) + bucket.total, bucket=bucket,
        price_source=" ".join(str(prices["source"]).split()),
        price_date=str(prices["retrieved"]))


def _duration(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _money(value: float | None, digits: int) -> str:
    """A right-aligned column cell; n/a where no price is published."""
    return f"{'n/a':>12}" if value is None else f"{value:>12.{digits}f}"


def _bucket_rows(bucket: BucketCost) -> list[tuple[str, float, float]]:
    rotated = bucket.checkpoints_written - bucket.checkpoints_kept
    return [(f"bucket storage while training ({bucket.run_gb:.1f} GB)", bucket.storage_usd,
             bucket.storage_usd),
            (f"{rotated} rotated checkpoints, {bucket.soft_delete_days:g} days soft-deleted",
             bucket.soft_delete_usd, bucket.soft_delete_usd),
            (f"download by cloud sync ({bucket.run_gb:.1f} GB)", bucket.download_usd,
             bucket.download_usd)]


def _cap_line(e: CostEstimate) -> str:
    bought = ("no limit" if math.isinf(e.budget_hours) else
              f"{_duration(e.budget_hours)} at ${e.hourly[e.chosen]:.4f}/h")
    return (f"  one VM deletes itself after {_duration(e.cap_hours)} (maxRunDuration: "
            f"cloud.max_cost_usd = ${e.budget_usd:.2f} buys {bought}, cloud.max_run_hours = "
            f"{_duration(e.max_run_hours)}) and costs at most ${e.cap_total:.2f}; a replacement "
            f"gets what the budget has left")


def format_estimate(estimate: CostEstimate) -> str:
    """A small table: $/hour per part, on-demand vs spot, the bucket once per run, duration,
    totals, and the per-VM cap from the budget."""
    e = estimate
    rows = [("machine " + e.machine_type, e.machine_per_hour["on_demand"],
             e.machine_per_hour["spot"]),
            (f"GPU {e.gpu_count} x {e.gpu_type}", e.gpu_count * e.gpu_per_hour["on_demand"],
             None if e.gpu_per_hour["spot"] is None else e.gpu_count * e.gpu_per_hour["spot"]),
            (f"boot disk {e.boot_disk_gb} GB", e.disk_per_hour, e.disk_per_hour),
            ("external IP address", e.ip_per_hour["on_demand"], e.ip_per_hour["spot"]),
            ("total per hour", e.hourly["on_demand"], e.hourly["spot"])]
    width = 44
    lines = [f"Cost estimate for {e.region}, USD (prices retrieved {e.price_date}; source: "
             f"{e.price_source})",
             f"  {'per hour':<{width}}{'on-demand':>12}{'spot':>12}"]
    lines += [f"  {label:<{width}}{_money(on_demand, 4)}{_money(spot, 4)}"
              for label, on_demand, spot in rows]
    lines.append("  once per run")
    lines += [f"  {label:<{width}}{_money(on_demand, 4)}{_money(spot, 4)}"
              for label, on_demand, spot in _bucket_rows(e.bucket)]
    lines.append(f"  estimated duration: {_duration(e.hours)} "
                 f"(startup {_duration(e.startup_hours)}, "
                 f"{e.train_sentences} training + {e.eval_sentences} evaluation sentences at "
                 f"{e.throughput:g} sentences/s, {e.throughput_source})")
    lines.append(f"  {'estimated total':<{width}}{_money(e.total['on_demand'], 2)}"
                 f"{_money(e.total['spot'], 2)}")
    kind = "spot" if e.chosen == "spot" else "on-demand"
    lines.append(f"  this run uses {kind} capacity: about ${e.total[e.chosen]:.2f}; keeping the "
                 f"finished run in the bucket costs ${e.bucket.per_month_usd:.2f} a month")
    lines.append(_cap_line(e))
    if e.chosen == "spot":
        lines.append(f"  worst case with {MAX_REPLACEMENTS} preemptions, each just before the end: "
                     f"${e.worst_case:.2f} (the VMs never spend past cloud.max_cost_usd)")
    if e.hours > e.cap_hours:
        limit = ("cloud.max_run_hours" if e.cap_hours >= e.max_run_hours
                 else "what cloud.max_cost_usd buys")
        lines.append(f"  WARNING: the estimate ({_duration(e.hours)}) exceeds {limit}; the VM "
                     f"would be deleted before training ends. Raise cloud.max_run_hours or "
                     f"cloud.max_cost_usd.")
    return "\n".join(lines)


def check_budget(estimate: CostEstimate, max_cost_usd: float) -> None:
    """Refuse a run whose estimate at the chosen rate exceeds ``cloud.max_cost_usd``."""
    cost = estimate.total[estimate.chosen]
    if cost > max_cost_usd:
        cheaper = ""
        spot = estimate.total["spot"]
        if estimate.chosen == "on_demand" and spot is not None and spot <= max_cost_usd:
            cheaper = f" Spot capacity would cost about ${estimate.total['spot']:.2f} " \
                      f"(cloud.preemptible: true)."
        raise CostError(f"the estimated cost ${cost:.2f} exceeds cloud.max_cost_usd = "
                        f"${max_cost_usd:.2f}; nothing was started.{cheaper} Raise "
                        f"cloud.max_cost_usd (--set cloud.max_cost_usd=...) to allow it.")
