#!/usr/bin/env python
"""Prepare a GCP project for cloud training, and optionally start a GPU VM to work on.

    python scripts/gcp_setup.py --project my-project --setup-only
    python scripts/gcp_setup.py --project my-project --gpu-type nvidia-tesla-t4 --zone us-central1-a

Enables the Compute Engine, Cloud Storage, IAM and Resource Manager APIs, creates the results
bucket (uniform access, public access prevented), creates the VM's service account
(media-bias-trainer) and grants it its roles (and the bucket when it belongs to another project),
checks your own permissions (testIamPermissions),
the GPU quota of the region and of the project (GPUS_ALL_REGIONS) and the boot image family,
printing what is missing.
Without --setup-only it also creates a labelled GPU VM that deletes itself after
--max-run-hours. Credentials: Application Default Credentials
(`gcloud auth application-default login`); nothing is written anywhere. See docs/cloud.md.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.ml.cloud.compute import DEFAULT_IMAGE_FAMILY  # noqa: E402
from backend.ml.errors import UserError  # noqa: E402

INTERACTIVE_SCRIPT = """#!/bin/bash
# media-bias interactive training VM: nothing runs automatically.
echo "media-bias VM ready; it is deleted by Compute Engine at the end of its maximum run time."
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True, help="GCP project id")
    parser.add_argument("--region", default="us-central1", help="region of the bucket and VM")
    parser.add_argument("--bucket", help="results bucket (default: <project>-media-bias-runs)")
    parser.add_argument("--setup-only", action="store_true",
                        help="APIs, bucket and quota check only; create no VM")
    parser.add_argument("--skip-enable", action="store_true",
                        help="do not call the Service Usage API (the APIs are already on)")
    parser.add_argument("--wandb", action="store_true",
                        help="runs will log to W&B: enable Secret Manager, let the VM's account "
                             "read the key and check that the secret exists")
    vm = parser.add_argument_group("training VM (without --setup-only)")
    vm.add_argument("--zone", help="zone (default: the first of the region offering the GPU)")
    vm.add_argument("--machine-type", default="n1-standard-4")
    vm.add_argument("--gpu-type", default="nvidia-tesla-t4")
    vm.add_argument("--gpu-count", type=int, default=1)
    vm.add_argument("--on-demand", action="store_true", help="on-demand instead of spot")
    vm.add_argument("--boot-disk-gb", type=int, default=100)
    vm.add_argument("--image-family", default=DEFAULT_IMAGE_FAMILY,
                    help="Deep Learning VM image family (checked with images.getFromFamily)")
    vm.add_argument("--image-project", default="deeplearning-platform-release")
    vm.add_argument("--max-run-hours", type=float, default=4.0,
                    help="the VM is deleted after this long, whatever happens")
    vm.add_argument("--name", help="VM name (default: mb-interactive-<random>)")
    return parser


def create_vm(args, bucket: str) -> None:
    from types import SimpleNamespace

    from backend.ml.cloud.catalog import check_machine_and_gpu
    from backend.ml.cloud.compute import (
        Compute,
        VmSpec,
        create_with_fallback,
        instance_body,
        label_value,
        service_account_email,
    )

    problems = check_machine_and_gpu(SimpleNamespace(
        machine_type=args.machine_type, gpu_type=args.gpu_type, gpu_count=args.gpu_count,
        region=args.region, zones=[args.zone] if args.zone else []))
    if problems:
        raise UserError("the VM flags do not fit together:\n  " + "\n  ".join(
            problem.replace("cloud.", "--").replace("_", "-") for problem in problems))
    compute = Compute()
    zones = [args.zone] if args.zone else compute.zones_offering(args.project, args.region,
                                                                 args.gpu_type)
    name = args.name or f"mb-interactive-{uuid.uuid4().hex[:6]}"
    spec = VmSpec(project=args.project, run_id=name, bucket=bucket,
                  machine_type=args.machine_type, gpu_type=args.gpu_type,
                  gpu_count=args.gpu_count, preemptible=not args.on_demand,
                  boot_disk_gb=args.boot_disk_gb, image_family=args.image_family,
                  image_project=args.image_project, max_run_hours=args.max_run_hours,
                  service_account=service_account_email(args.project))
    zone, _ = create_with_fallback(compute, args.project, zones,
                                   lambda zone: instance_body(spec, zone, name,
                                                              INTERACTIVE_SCRIPT))
    print(f"\nCreated {name} in {zone} (label media-bias-run={label_value(name)}); it is "
          f"deleted after {args.max_run_hours:g} h at the latest.\n"
          f"  connect:   gcloud compute ssh {name} --zone {zone} --project {args.project}\n"
          f"  copy code: gcloud compute scp --recurse . {name}:~/media-bias --zone {zone}\n"
          f"  train:     cd ~/media-bias && pip install -e . && "
          f"python run_experiment.py experiments/configs/quickstart.yaml\n"
          f"  delete:    python run_experiment.py cloud teardown --set cloud.project="
          f"{args.project}")


def main(argv: list[str] | None = None) -> int:
    from backend.ml.cloud.setup import setup_project

    args = build_parser().parse_args(argv)
    bucket = args.bucket or f"{args.project}-media-bias-runs"
    try:
        missing = setup_project(args.project, args.region, bucket, args.gpu_type,
                                args.gpu_count, args.machine_type, spot=not args.on_demand,
                                enable=not args.skip_enable, image_family=args.image_family,
                                image_project=args.image_project, wandb=args.wandb)
        if missing:
            print("\nMissing before a GPU run can start:")
            for item in missing:
                print(f"  - {item}")
        else:
            print("\nReady: python run_experiment.py CONFIG --cloud --set cloud.project="
                  f"{args.project}" + (f" --set cloud.bucket={bucket}" if args.bucket else ""))
        if args.setup_only:
            return 1 if missing else 0
        create_vm(args, bucket)
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # API refusals (permissions, unknown project) as plain messages
        if type(error).__module__.startswith(("google.", "requests")):
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
