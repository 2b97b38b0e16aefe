"""Cost estimates against hand-computed figures, cloud-section validation, and ``--dry-run``."""

from __future__ import annotations

import json

import pytest
import yaml

from backend.ml.cloud.catalog import check_machine_and_gpu
from backend.ml.cloud.launch import cloud_problems
from backend.ml.cloud.orchestrate import vm_config
from backend.ml.cloud.pricing import (
    CostError,
    check_budget,
    estimate_cost,
    format_estimate,
    load_prices,
)
from backend.ml.config import CloudConfig
from backend.ml.config.loading import config_from_dict
from support.cli import run_main
from support.configs import tiny_config, write_config


def _config(**cloud):
    return config_from_dict({
        "model": {"architecture": "bert", "model_name": "bert-base-uncased"},
        "training": {"batch_size": 16, "epochs": 3},
        "cloud": {"machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-v100",
                  "gpu_count": 1, "boot_disk_gb": 100, "region": "us-central1", **cloud}})


def test_estimate_matches_the_hand_computed_figures_of_the_shipped_prices():
    estimate = estimate_cost(_config(), train_size=2000, validation_size=250, test_size=250)
    # prices.yaml, us-central1: n1-standard-4 0.19 / 0.06382, V100 2.48 / 1.2338,
    # pd-balanced 0.10 $/GB-month over 730 h, external IP 0.005 / 0.0025 per hour.
    disk = 100 * 0.10 / 730
    on_demand, spot = 0.19 + 2.48 + disk + 0.005, 0.06382 + 1.2338 + disk + 0.0025
    assert estimate.hourly["on_demand"] == pytest.approx(on_demand)
    assert estimate.hourly["spot"] == pytest.approx(spot)
    # 3 epochs x 2000 sentences at 350/s (V100, base); 3 evaluations of 250 + a final
    # validation and test pass of 250 each at 3 x 350/s; 12 minutes of startup.
    assert estimate.train_sentences == 6000 and estimate.eval_sentences == 1250
    hours = 12 / 60 + 6000 / 350 / 3600 + 1250 / 1050 / 3600
    assert estimate.hours == pytest.approx(hours)
    # The bucket: 3 epoch-end checkpoints of a base model (1.3 GB), all kept (save_total_limit 2
    # plus the best), and the final model (a third of one): 4.33 GB, stored at 0.020 $/GB-month
    # while the run lasts and downloaded once by `cloud sync` at 0.12 $/GB.
    run_gb = 3 * 1.3 + 1.3 / 3
    bucket = run_gb * 0.020 * hours / 730 + run_gb * 0.12
    assert estimate.total["spot"] == pytest.approx(spot * hours + bucket)
    assert estimate.total["on_demand"] == pytest.approx(on_demand * hours + bucket)
    assert estimate.chosen == "spot"
    assert estimate.cap_total == pytest.approx(6.0 * spot)  # $20 buys 15 h: max_run_hours caps
    # Worst case: the run preempted just before its end, five times over, then a sixth VM.
    assert estimate.worst_case == pytest.approx(6 * spot * hours + bucket)
    text = format_estimate(estimate)
    assert "2.6887" in text and "1.3138" in text and "1.07" in text and "0.79" in text
    assert "external IP address" in text and "worst case with 5 preemptions" in text
    assert "one VM deletes itself after 6 h 00 min" in text
    # prices.yaml: retrieved "2026-12-02", the date its figures were read from the catalogue.
    assert "retrieved 2026-12-02" in text and "skypilot-org/skypilot-catalog" in text


# Rows of catalogs/v9/gcp/vms.csv in skypilot-org/skypilot-catalog at commit
# 2c3d7ea7d76bf84cf80d382e946c1609571485fd, read by hand (columns Price, SpotPrice):
#   n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.12765
#   n1-standard-4,4.0,15.0,,,,europe-west4,europe-west4-a,0.20917,0.11052
#   a2-highgpu-1g,12.0,85.0,,,,europe-west4,europe-west4-a,0.81406,0.36774
#   ,,,V100,1,{...},us-central1,us-central1-a,2.48,1.2338
#   ,,,T4,1,{...},europe-west4,europe-west4-a,0.3675,0.1805
#   ,,,L4,1,{...},us-central1,us-central1-a,0.56004,0.2862
#   ,,,A100,2,{...},europe-west4,europe-west4-a,3.2273,2.6502  (per GPU: 1.61365 / 1.3251;
#      the on-demand figure is half its neighbours', see prices.yaml: 3.2273 per GPU is used)
@pytest.mark.parametrize("region, table, name, on_demand, spot", [
    ("us-central1", "machines", "n1-standard-8", 0.38, 0.12765),
    ("europe-west4", "machines", "n1-standard-4", 0.20917, 0.11052),
    ("europe-west4", "machines", "a2-highgpu-1g", 0.81406, 0.36774),
    ("us-central1", "gpus", "nvidia-tesla-v100", 2.48, 1.2338),
    ("europe-west4", "gpus", "nvidia-tesla-t4", 0.3675, 0.1805),
    ("us-central1", "gpus", "nvidia-l4", 0.56004, 0.2862),
    ("europe-west4", "gpus", "nvidia-tesla-a100", 3.2273, 2.6502 / 2),
])
def test_shipped_prices_are_the_catalogue_rows_checked_by_hand(region, table, name, on_demand,
                                                               spot):
    entry = load_prices()["regions"][region][table][name]
    assert entry == {"on_demand": pytest.approx(on_demand), "spot": pytest.approx(spot)}


def test_the_bucket_and_the_download_are_in_the_estimate_with_soft_deleted_checkpoints():
    config = _config()
    config.logging.save_steps, config.logging.save_minutes = 100, 0
    estimate = estimate_cost(config, train_size=2000, validation_size=250, test_size=250)
    # 375 optimiser steps of 16: 3 checkpoints every 100 steps and 3 at the epoch ends; the
    # bucket keeps 3 (save_total_limit 2 plus the best), so 3 are rotated out and soft delete
    # bills each 1.3 GB of them for 7 more days at 0.020 $/GB-month.
    bucket = estimate.bucket
    assert (bucket.checkpoints_written, bucket.checkpoints_kept) == (6, 3)
    assert bucket.soft_delete_usd == pytest.approx(3 * 1.3 * 0.020 * 7 * 24 / 730)
    assert bucket.download_usd == pytest.approx((3 * 1.3 + 1.3 / 3) * 0.12)
    assert estimate.total["spot"] == pytest.approx(estimate.hourly["spot"] * estimate.hours
                                                   + bucket.total)
    text = format_estimate(estimate)
    assert "3 rotated checkpoints, 7 days soft-deleted" in text
    assert "download by cloud sync (4.3 GB)" in text and "0.5200" in text
    assert "keeping the finished run in the bucket costs $0.09 a month" in text


def test_measured_throughput_mixed_precision_and_max_steps_change_the_duration():
    measured = estimate_cost(_config(throughput_samples_per_second=100.0), 2000, 250, 250)
    assert measured.throughput == 100.0 and "measured" in measured.throughput_source
    assert measured.hours == pytest.approx(0.2 + 6000 / 100 / 3600 + 1250 / 300 / 3600)

    config = _config()
    config.training.mixed_precision = "fp16"
    assert estimate_cost(config, 2000, 250, 250).throughput == pytest.approx(350 * 1.8)
    config.training.mixed_precision = "auto"  # a V100 has no bf16: auto trains in fp32 there
    assert estimate_cost(config, 2000, 250, 250).throughput == pytest.approx(350)
    config.cloud.gpu_type, config.cloud.preemptible = "nvidia-l4", False  # auto trains in bf16
    assert "mixed precision" in estimate_cost(config, 2000, 250, 250).throughput_source

    config = _config()
    config.training.max_steps = 10  # 10 steps of 16 sentences, then one evaluation
    capped = estimate_cost(config, 2000, 250, 250)
    assert capped.train_sentences == 160 and capped.eval_sentences == 250 + 250 + 250


def test_a_user_price_file_overrides_the_shipped_one(tmp_path):
    prices = {"source": "my negotiated rates", "retrieved": "2026-01-01",
              "regions": {"us-central1": {"machines": {"n1-standard-4": {"on_demand": 1.0,
                                                                         "spot": 0.5}},
                                          "gpus": {"nvidia-tesla-v100": {"on_demand": 2.0,
                                                                         "spot": 1.0}},
                                          "disk_gb_month": 0.0}},
              "throughput": {"nvidia-tesla-v100": {"base": 1}}, "startup_minutes": 0,
              "eval_speedup": 1.0}
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(prices))
    estimate = estimate_cost(_config(price_file=str(path), preemptible=False), 3600, 0, 0)
    # 3 epochs x 3600 sentences at 1/s = 3 h, plus 3 validation passes of 0 and no test
    assert estimate.hours == pytest.approx(3.0)
    assert estimate.total == {"on_demand": pytest.approx(9.0), "spot": pytest.approx(4.5)}
    assert estimate.chosen == "on_demand" and estimate.price_source == "my negotiated rates"


def test_price_file_problems_are_clear(tmp_path):
    with pytest.raises(CostError, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("source: x\n")
    with pytest.raises(CostError, match="lacks retrieved, regions, throughput"):
        load_prices(tmp_path / "bad.yaml")
    with pytest.raises(CostError, match="no prices for region 'asia-east9'"):
        estimate_cost(_config(region="asia-east9"), 100)
    with pytest.raises(CostError, match="no machine price for 'n1-standard-32'"):
        estimate_cost(_config(machine_type="n1-standard-32", gpu_type="nvidia-tesla-t4"), 100)


def test_budget_refusal_names_the_limit_and_the_cheaper_option():
    estimate = estimate_cost(_config(preemptible=False), 2000, 250, 250)
    # about $1.07 on demand, $0.79 at spot, the $0.52 download of the run included
    with pytest.raises(CostError, match=r"exceeds cloud.max_cost_usd = \$0.90.*Spot capacity"):
        check_budget(estimate, 0.90)
    check_budget(estimate, 1.10)


@pytest.mark.parametrize("cloud, message", [
    ({"gpu_type": "nvidia-tesla-v10"}, "unknown GPU 'nvidia-tesla-v10' (did you mean "
                                       "'nvidia-tesla-v100'?)"),
    ({"gpu_type": "nvidia-tesla-a100"}, "comes only with the A2 machine types"),
    ({"gpu_type": "nvidia-l4", "machine_type": "g2-standard-24"},
     "g2-standard-24 comes with 2 NVIDIA L4 GPU(s); set gpu_count to 2"),
    ({"machine_type": "e2-standard-4"}, "attaches only to N1 machine types"),
    ({"gpu_type": "nvidia-tesla-v100", "machine_type": "n1-standard-16"},
     "has 16 vCPUs; with 1 NVIDIA V100 at most 12"),
    ({"gpu_count": 3}, "NVIDIA T4 VMs take 1, 2, 4 GPUs, got 3"),
    ({"zones": ["europe-west4-a"]}, "zones[0]: zone 'europe-west4-a' is not in cloud.region"),
    ({"gpu_type": "nvidia-tesla-p100", "zones": ["us-central1-a"]},
     "zones[0]: us-central1-a does not offer nvidia-tesla-p100"),
])
def test_each_cloud_rule_has_its_message(cloud, message):
    problems = check_machine_and_gpu(CloudConfig(**cloud))
    assert any(message in problem for problem in problems), problems


def test_compatible_sections_pass_and_run_level_problems_are_listed_together():
    assert check_machine_and_gpu(CloudConfig(gpu_type="nvidia-tesla-a100",
                                             machine_type="a2-highgpu-1g")) == []
    assert check_machine_and_gpu(CloudConfig(gpu_type="nvidia-tesla-t4",
                                             machine_type="n1-highmem-8")) == []
    config = config_from_dict(tiny_config(cloud={"bucket": "Bad_Bucket!"}))
    problems = cloud_problems(config)
    assert any(p.startswith("cloud.bucket:") for p in problems)
    assert any(p.startswith("training.device: 'cpu' would leave the GPU idle") for p in problems)


def test_mpnet_travels_from_the_model_cache_and_is_refused_before_it_is_fetched(
        tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIA_BIAS_MODEL_CACHE", str(tmp_path / "cache"))
    config = config_from_dict(tiny_config(
        training={"device": "auto"},
        model={"architecture": "mpnet", "model_name": "mpnet", "pretrained": True}),
        validate=False)
    assert any(problem.startswith("model.model_name: 'mpnet' travels to the VM") and
               "models fetch mpnet" in problem for problem in cloud_problems(config))
    fetched = tmp_path / "cache" / "all-mpnet-base-v2"
    fetched.mkdir(parents=True)
    (fetched / "config.json").write_text("{}")
    (fetched / "model.safetensors").write_bytes(b"weights")
    assert not any(p.startswith("model.model_name") for p in cloud_problems(config))
    remote, uploads = vm_config(config)
    assert remote.model.model_name == "cloud_inputs/model/all-mpnet-base-v2"
    assert {name for _, name in uploads} == {"model/all-mpnet-base-v2/config.json",
                                             "model/all-mpnet-base-v2/model.safetensors"}


def test_wandb_on_the_vm_needs_the_scope_that_reaches_secret_manager():
    narrow = config_from_dict(tiny_config(training={"device": "auto"}, logging={"wandb": True}))
    assert any(p.startswith("cloud.cloud_platform_scope: logging.wandb needs the W&B key")
               for p in cloud_problems(narrow))
    broad = config_from_dict(tiny_config(training={"device": "auto"}, logging={"wandb": True},
                                         cloud={"cloud_platform_scope": True}))
    assert cloud_problems(broad) == []


def _dry_run_config(tmp_path, **cloud):
    config = tiny_config(training={"device": "auto"},
                         cloud={"gpu_type": "nvidia-tesla-t4", "machine_type": "n1-standard-8",
                                **cloud})
    return write_config(tmp_path, config)


def test_dry_run_prints_the_estimate_and_the_exact_request_without_calling_gcp(tmp_path, capsys):
    path = _dry_run_config(tmp_path, zones=["us-central1-b", "us-central1-c"])
    completed = run_main(capsys, str(path), "--cloud", "--dry-run", "--run-id", "tiny_aaaaaa",
                        "--set", "cloud.project=", check=True)
    out = completed.stdout
    assert "Cost estimate for us-central1" in out and "estimated total" in out
    assert "on stockout then us-central1-c" in out and "Nothing was created (--dry-run)." in out
    request = out.split("/instances:\n", 1)[1].split("\n\nUploads", 1)[0]
    body = json.loads(request)
    assert body["name"] == "mb-tiny-aaaaaa-0"
    assert body["guestAccelerators"][0]["acceleratorType"] == (
        "projects/YOUR_PROJECT/zones/us-central1-b/acceleratorTypes/nvidia-tesla-t4")
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert "gs://YOUR_PROJECT-media-bias-runs/runs/tiny_aaaaaa/" in out


def test_invalid_cloud_section_exits_2_with_every_problem_and_no_traceback(tmp_path, capsys):
    path = _dry_run_config(tmp_path, gpu_type="nvidia-tesla-a100", zones=["europe-west4-a"])
    completed = run_main(capsys, str(path), "--cloud", "--dry-run")
    assert completed.returncode == 2
    assert "cloud.machine_type: NVIDIA A100 40GB" in completed.stderr
    assert "cloud.zones[0]" in completed.stderr and "Traceback" not in completed.stderr


def test_over_budget_exits_1_before_anything_is_created(tmp_path, capsys):
    path = _dry_run_config(tmp_path, max_cost_usd=0.001, project="p")
    completed = run_main(capsys, str(path), "--cloud", "--yes")
    assert completed.returncode == 1
    assert "exceeds cloud.max_cost_usd" in completed.stderr and "Traceback" not in completed.stderr


def test_a_gpu_without_a_published_spot_price_is_priced_on_demand_only(tmp_path):
    prices = load_prices()
    prices["regions"]["us-central1"]["gpus"]["nvidia-l4"]["spot"] = None
    del prices["_path"]
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(prices))
    on_demand = estimate_cost(_config(gpu_type="nvidia-l4", machine_type="g2-standard-4",
                                      preemptible=False, price_file=str(path)), 2000, 250, 250)
    assert on_demand.total["spot"] is None and on_demand.total["on_demand"] > 0
    assert "n/a" in format_estimate(on_demand)
    check_budget(on_demand, 100.0)  # the missing spot figure is no obstacle on demand
    with pytest.raises(CostError, match="no published spot price for g2-standard-4 with "
                                        "nvidia-l4 in us-central1.*cloud.preemptible: false"):
        estimate_cost(_config(gpu_type="nvidia-l4", machine_type="g2-standard-4",
                              price_file=str(path)), 2000, 250, 250)
