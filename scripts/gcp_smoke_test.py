#!/usr/bin/env python
"""End-to-end check of cloud training on a real GCP project (costs well under $1).

    python scripts/gcp_smoke_test.py --project my-project

Trains a tiny randomly initialised model on the shipped demo data on one NVIDIA T4 spot VM,
forces a preemption once a checkpoint is in the bucket (instances.simulateMaintenanceEvent),
continues the run on a replacement VM (cloud sync RUN_ID --continue), waits for the run's
completion marker and then asserts:

  * CUDA kernels ran: the marker's GPU check holds a matmul on the T4 (compute capability 7.5)
    that matches the CPU's, with the CUDA build chosen for it; the run's config says cuda,
  * the replacement resumed from a checkpoint (metadata.resumed_from_step > 0),
  * the bucket is intact (every object of the completion marker's manifest is there, same CRC32C),
  * no VM of the run remains,
  * the run cost less than --max-cost-usd (default $1) by its own VM-hours.

Needs Application Default Credentials and a project prepared by scripts/gcp_setup.py (APIs,
bucket, service account, T4 spot quota). Not part of the test suite. See docs/cloud.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# A run long enough (a few minutes on a T4) to be preempted between two checkpoints.
SMOKE_CONFIG = {
    "experiment_name": "smoke",
    "description": "GCP smoke test: tiny model, forced preemption",
    "seed": 7,
    "model": {"architecture": "bert", "model_name": "tiny-bert", "pretrained": False,
              "num_labels": 3, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 500},
    "training": {"batch_size": 16, "learning_rate": 1.0e-3, "epochs": 40, "device": "cuda"},
    "data": {"dataset": "demo", "max_length": 64},
    "logging": {"save_steps": 25, "log_steps": 25, "tensorboard": False, "wandb": False},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Steps: launch (--detach), wait for a checkpoint, "
                                     "simulateMaintenanceEvent, cloud sync --continue, checks.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True, help="GCP project id")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--bucket", help="results bucket (default: <project>-media-bias-runs)")
    parser.add_argument("--max-cost-usd", type=float, default=1.0,
                        help="budget of the run and the bound the check asserts (default 1)")
    parser.add_argument("--checkpoint-timeout", type=float, default=1800,
                        help="seconds to wait for the first checkpoint in the bucket")
    parser.add_argument("--marker-timeout", type=float, default=600,
                        help="seconds to wait for the completion marker after the run")
    return parser


def _wait_for_marker(client, run_url: str, timeout: float) -> dict | None:
    """The run's completion marker (``cloud/DONE.json``), once the VM has written it."""
    from backend.ml.cloud import storage

    deadline = time.monotonic() + timeout
    while (marker := storage.read_json(client, f"{run_url}/cloud/DONE.json")) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(15)
    return marker


def _check_gpu_report(marker: dict, failures: list[str]) -> None:
    """The marker's GPU check: a matmul ran on the T4 with the build chosen for it."""
    from backend.ml.cloud.agent import MATMUL_TOLERANCE
    from backend.ml.cloud.cuda_builds import choose_build, pinned_torch
    from backend.ml.config import CloudConfig

    expected = choose_build("nvidia-tesla-t4", CloudConfig().image_family, pinned_torch()).build
    report = marker.get("gpu") or {}
    devices = report.get("devices") or [{}]
    _check(bool(report.get("ok")), f"the VM's GPU check passed ({report.get('reason') or 'ok'})",
           failures)
    _check(devices[0].get("capability") == "7.5", f"the GPU check ran on a T4 ({devices})",
           failures)
    error = devices[0].get("matmul_max_error")
    _check(error is not None and error <= MATMUL_TOLERANCE,
           f"a CUDA matmul matched the CPU's (max error {error})", failures)
    _check(report.get("cuda") == expected.cuda and
           str(report.get("torch", "")).endswith(f"+{expected.name}"),
           f"torch {report.get('torch')} (CUDA {report.get('cuda')}) is the {expected.name} "
           f"build chosen for the T4", failures)


def _cli(*args: str) -> subprocess.CompletedProcess:
    print("$ python run_experiment.py " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_experiment.py"), *args],
                          cwd=REPO_ROOT, text=True)


def _check(condition: bool, what: str, failures: list[str]) -> None:
    print(f"  {'ok  ' if condition else 'FAIL'} {what}", flush=True)
    if not condition:
        failures.append(what)


def main(argv: list[str] | None = None) -> int:
    import yaml

    from backend.ml.cloud import storage
    from backend.ml.cloud.compute import Compute, label_value
    from backend.ml.cloud.launch import default_bucket
    from backend.ml.cloud.orchestrate import load_launch

    args = build_parser().parse_args(argv)
    bucket = args.bucket or default_bucket(args.project)
    run_id = f"smoke_{uuid.uuid4().hex[:6]}"
    settings = [f"cloud.project={args.project}", f"cloud.bucket={bucket}",
                f"cloud.region={args.region}", "cloud.gpu_type=nvidia-tesla-t4",
                "cloud.machine_type=n1-standard-4", "cloud.gpu_count=1",
                "cloud.preemptible=true", "cloud.max_run_hours=1",
                f"cloud.max_cost_usd={args.max_cost_usd}"]
    overrides = [item for setting in settings for item in ("--set", setting)]
    compute, client = Compute(), storage.storage_client(args.project)
    run_url = storage.gs_url(bucket, "runs", run_id)
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "smoke.yaml"
        config.write_text(yaml.safe_dump(SMOKE_CONFIG), encoding="utf-8")
        runs_dir = Path(work) / "runs"
        try:
            if _cli(str(config), "--cloud", "--yes", "--detach", "--run-id", run_id,
                    "--output-dir", str(runs_dir), *overrides).returncode != 0:
                print("launch failed", file=sys.stderr)
                return 1
            first = load_launch(client, bucket, run_id).vms[0]
            print(f"waiting for a checkpoint in {run_url}/run/checkpoints/", flush=True)
            deadline = time.monotonic() + args.checkpoint_timeout
            while not any(name.startswith("checkpoints/step-") for name in
                          storage.remote_files(client, f"{run_url}/run")):
                if time.monotonic() > deadline:
                    print("no checkpoint arrived in time", file=sys.stderr)
                    return 1
                time.sleep(20)
            print(f"forcing a preemption of {first['instance']} (simulateMaintenanceEvent)")
            compute.simulate_maintenance(args.project, first["zone"], first["instance"])
            continued = _cli("cloud", "sync", run_id, "--continue", "--runs-dir", str(runs_dir),
                             *overrides)
            print("checks:")
            _check(continued.returncode == 0, "the run completed after the preemption", failures)
            run = load_launch(client, bucket, run_id)
            _check(compute.was_preempted(args.project, first["zone"], first["instance"]),
                   "the first VM's preemption is on record", failures)
            _check(len(run.vms) >= 2, f"a replacement VM ran ({len(run.vms)} VMs)", failures)
            results_file = runs_dir / run_id / "results.json"
            results = json.loads(results_file.read_text()) if results_file.is_file() else {}
            saved = runs_dir / run_id / "config.yaml"
            trained = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
            _check((trained or {}).get("training", {}).get("device") == "cuda",
                   "the run's config.yaml: training.device is cuda", failures)
            _check((results.get("metadata", {}).get("resumed_from_step") or 0) > 0,
                   "the replacement resumed from a checkpoint", failures)
            marker = _wait_for_marker(client, run_url, args.marker_timeout) or {}
            _check(marker.get("status") == "completed",
                   f"the completion marker says completed ({marker.get('status')})", failures)
            _check_gpu_report(marker, failures)
            remote = {name: blob.crc32c for name, blob in
                      storage.remote_files(client, f"{run_url}/run").items()}
            _check(bool(marker.get("manifest")) and all(
                remote.get(name) == crc for name, crc in marker["manifest"].items()),
                "the bucket holds every file of the completion marker's manifest", failures)
            time.sleep(60)  # a VM deleting itself is STOPPING for a while
            left = [vm for vm in compute.list_run_instances(args.project)
                    if vm["labels"].get("media-bias-run") == label_value(run_id)]
            _check(not left, "no VM of the run remains", failures)
            _check(run.spent_usd() < args.max_cost_usd,
                   f"cost ${run.spent_usd():.2f} < ${args.max_cost_usd:.2f} "
                   f"({run.vm_hours():.2f} VM-hours)", failures)
        finally:
            _cli("cloud", "teardown", "--yes", "--run-id", run_id, *overrides)
    print(f"\n{'FAILED: ' + '; '.join(failures) if failures else 'All checks passed.'} "
          f"(run {run_id} stays in {run_url})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
