"""The VM lifecycle against the strict Compute fake: images, transitional states, deletions that
race the VM's own, confirmed preemptions only, the budget across replacements, GPU quota,
creation interrupted by Ctrl-C or a time-out, teardown of this project's VMs only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backend.ml.cloud import storage
from backend.ml.cloud.commands import CloudTarget, cloud_run_command, cloud_teardown_command
from backend.ml.cloud.compute import CapacityError, CloudError, Compute, OperationTimeout
from backend.ml.cloud.orchestrate import CloudRun, start_vm, watch_run
from backend.ml.errors import UserError
from support.cloud import PROJECT
from support.configs import tiny_config, write_config
from support.fakes.fake_compute import CURRENT_FAMILY, RETIRED_FAMILY
from support.signals import ctrl_c_main_thread, ctrl_c_raises_keyboard_interrupt, once

ZONE = "us-central1-a"
NAME = "mb-life-0a1b2c-0"


def _run(bucket: str, preemptible: bool = True, image_family: str = CURRENT_FAMILY,
         **fields) -> CloudRun:
    spec = {"project": PROJECT, "run_id": "life_0a1b2c", "bucket": bucket,
            "machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-t4", "gpu_count": 1,
            "preemptible": preemptible, "boot_disk_gb": 50, "image_family": image_family,
            "image_project": "deeplearning-platform-release", "max_run_hours": 2.0,
            "service_account": f"media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"}
    return CloudRun(run_id="life_0a1b2c", project=PROJECT, region="us-central1",
                    bucket=bucket, zones=[ZONE], spec=spec, **fields)


def _quiet(*_):
    pass


def _finish(client, run: CloudRun) -> None:
    storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})


# ---- image families ---------------------------------------------------------------------------

def _dry_run(tmp_path, config_path) -> int:
    return cloud_run_command(CloudTarget(configs=[str(config_path)], runs_dir=tmp_path / "runs"),
                             run_id="life_d1d1d1", dry_run=True)


def _config(tmp_path, **cloud):
    return write_config(tmp_path, tiny_config(
        training={"device": "auto"}, cloud={"project": PROJECT, "gpu_type": "nvidia-tesla-t4",
                                            "zones": [ZONE], **cloud}))


def test_dry_run_resolves_the_image_family_through_the_compute_api(fake_compute, tmp_path,
                                                                  capsys):
    assert _dry_run(tmp_path, _config(tmp_path)) == 0
    out = capsys.readouterr().out
    assert (f"image family deeplearning-platform-release/{CURRENT_FAMILY}: "
            f"common-cu129-v20260901 (ACTIVE)") in out
    assert any(r["path"].endswith(f"/global/images/family/{CURRENT_FAMILY}")
               for r in fake_compute.requests)
    assert fake_compute.inserts == []


@pytest.mark.parametrize("family, message", [
    ("pytorch-latest-gpu", "'pytorch-latest-gpu' does not exist in deeplearning-platform-"
                           "release.*common-cu129-ubuntu-2204-nvidia-580"),
    (RETIRED_FAMILY, f"'{RETIRED_FAMILY}' is deprecated .*use 'common-cu129-v20260901'"),
])
def test_a_missing_or_deprecated_family_is_reported_with_its_replacement(
        fake_compute, tmp_path, family, message):
    with pytest.raises(CloudError, match=message):
        _dry_run(tmp_path, _config(tmp_path, image_family=family))
    assert fake_compute.inserts == []


def test_the_default_image_family_is_one_compute_engine_still_has():
    from backend.ml.config import CloudConfig
    assert CloudConfig().image_family == CURRENT_FAMILY


# ---- states and deletion races ------------------------------------------------------------------

def test_a_new_vm_passes_provisioning_and_staging_before_running(gcs, fake_compute):
    _, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    seen = [compute.get(PROJECT, ZONE, run.vms[0]["instance"])["status"] for _ in range(3)]
    assert seen == ["STAGING", "RUNNING", "RUNNING"]  # insert left it PROVISIONING


def test_deleting_a_vm_that_is_already_deleting_itself_is_tolerated(gcs, fake_compute, capsys):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    name = run.vms[0]["instance"]
    fake_compute.start_self_deletion(name)   # the startup script asked for its own deletion
    _finish(client, run)
    marker = watch_run(compute, client, run, poll_seconds=0, log=_quiet)
    assert marker["status"] == "completed"
    assert fake_compute.deletes == [name]     # refused as not ready, and that is fine
    fake_compute.finish_deletions()
    assert fake_compute.live() == [] and run.vms[0]["ended_at"]


@pytest.mark.parametrize("how", ["could_not_delete_itself", "host_maintenance"])
def test_a_stopped_vm_is_found_and_deleted_by_the_watcher(gcs, fake_compute, how):
    client, bucket = gcs
    run = _run(bucket, preemptible=how == "could_not_delete_itself")
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    name = run.vms[0]["instance"]
    if how == "host_maintenance":
        fake_compute.host_maintenance(name)
    else:
        fake_compute.set_status(name, "TERMINATED")  # shut down, delete-self failed
    with pytest.raises(CloudError,
                       match=r"stopped \(TERMINATED\).*cloud sync life_0a1b2c --continue"):
        watch_run(compute, client, run, poll_seconds=0, log=_quiet, sleep=_quiet)
    assert len(fake_compute.inserts) == 1 and fake_compute.live() == []


# ---- preemption, maxRunDuration, budget --------------------------------------------------------

def test_a_vm_deleted_at_max_run_hours_is_not_mistaken_for_a_preemption(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    run.vms[0]["created_at"] = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    fake_compute.expire(run.vms[0]["instance"])
    with pytest.raises(CloudError, match=r"at cloud.max_run_hours = 2 h \(maxRunDuration\)"):
        watch_run(compute, client, run, poll_seconds=0, log=_quiet, sleep=_quiet)
    assert len(fake_compute.inserts) == 1  # no replacement that would run into the cap again


def test_a_vm_deleted_at_the_duration_its_budget_bought_names_the_budget(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket, budget_usd=1.0, estimate={"hourly": {"spot": 2.0}, "chosen": "spot"})
    # $1 at $2/h buys 0.5 h, well under the 2 h of cloud.max_run_hours.
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    bought = run.vms[0]["max_hours"]
    assert bought == pytest.approx(0.5)
    run.vms[0]["created_at"] = (datetime.now(timezone.utc) - timedelta(hours=bought)).isoformat()
    fake_compute.expire(run.vms[0]["instance"])
    with pytest.raises(CloudError, match=rf"maxRunDuration of {bought:.2f} h, what "
                                         rf"cloud.max_cost_usd = \$1.00 left for it"):
        watch_run(compute, client, run, poll_seconds=0, log=_quiet, sleep=_quiet)
    assert len(fake_compute.inserts) == 1


def test_a_vm_deleted_by_someone_else_is_not_replaced(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    fake_compute.expire(run.vms[0]["instance"])  # gone, and no preemption on record
    with pytest.raises(CloudError, match="without a preemption on record"):
        watch_run(compute, client, run, poll_seconds=0, log=_quiet, sleep=_quiet)
    assert len(fake_compute.inserts) == 1


def test_simulated_maintenance_preempts_a_spot_vm_on_record(gcs, fake_compute):
    _, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    name = run.vms[0]["instance"]
    assert not compute.was_preempted(PROJECT, ZONE, name)
    compute.simulate_maintenance(PROJECT, ZONE, name)
    assert compute.was_preempted(PROJECT, ZONE, name) and compute.get(PROJECT, ZONE, name) is None


def test_replacements_stop_before_the_cumulative_cost_passes_the_budget(gcs, fake_compute):
    client, bucket = gcs
    # $1/h; the whole run was estimated at $1.50; the budget is $4.
    run = _run(bucket, estimate={"hourly": {"spot": 1.0, "on_demand": 3.0}, "chosen": "spot",
                                 "total": {"spot": 1.5, "on_demand": 4.5}, "hours": 1.5},
               budget_usd=4.0)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    # The first VM ran 2 h before its preemption: $2 left, so a replacement starts.
    run.vms[0]["created_at"] = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    polls = iter(["preempt-first", "age-second", "preempt-second"])

    def sleep(_):
        step = next(polls)
        if step == "preempt-first":
            fake_compute.preempt(run.vms[0]["instance"])
        elif step == "age-second":  # ran 1.9 h: $0.10 left buys 6 min, no third VM
            run.vms[1]["created_at"] = (datetime.now(timezone.utc)
                                        - timedelta(hours=1.9)).isoformat()
        else:
            fake_compute.preempt(run.vms[1]["instance"])

    with pytest.raises(CloudError, match=r"has cost about \$3\.9\d so far .*2 VM\(s\).*left of "
                                         r"cloud.max_cost_usd = \$4\.00"):
        watch_run(compute, client, run, poll_seconds=0, log=_quiet, sleep=sleep)
    assert len(fake_compute.inserts) == 2 and fake_compute.live() == []
    saved = storage.read_json(client, f"{run.url}/cloud/launch.json")
    assert saved["budget_usd"] == 4.0 and saved["vms"][0]["ended_at"]


def test_the_project_wide_gpu_quota_is_named_when_it_stops_the_insert(gcs, fake_compute):
    _, bucket = gcs
    fake_compute.project_quotas = [{"metric": "GPUS_ALL_REGIONS", "limit": 0.0, "usage": 0.0}]
    with pytest.raises(CapacityError, match="project-wide quota GPUS_ALL_REGIONS is used up"):
        start_vm(Compute(), _run(bucket), log=_quiet)
    assert fake_compute.live() == []


def test_an_unknown_service_account_is_refused_with_the_setup_command(gcs, fake_compute):
    _, bucket = gcs
    fake_compute.service_accounts.clear()
    with pytest.raises(CloudError, match="(?s)service account was refused.*gcp_setup.py"):
        start_vm(Compute(), _run(bucket), log=_quiet)


# ---- interrupted creation ---------------------------------------------------------------------

@pytest.mark.parametrize("interruption", ["ctrl_c", "time_out"])
def test_a_vm_still_being_created_is_deleted_once_it_exists(gcs, fake_compute, interruption):
    _, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    body = {"name": NAME, **_body(run)}
    if interruption == "ctrl_c":
        fake_compute.pending_polls = 200  # the insert operation stays RUNNING a long while
        # Ctrl-C while the first poll of the accepted insert is being answered.
        fake_compute.on_operation_poll = once(ctrl_c_main_thread)
        with ctrl_c_raises_keyboard_interrupt(), pytest.raises(KeyboardInterrupt):
            compute.insert(PROJECT, ZONE, body)
    else:
        fake_compute.pending_polls = 5
        with pytest.raises(OperationTimeout):  # a deadline already past: no clock involved
            compute.insert(PROJECT, ZONE, body, timeout=-1)
    # The VM came into existence after the interruption and was deleted then.
    assert NAME in fake_compute.deletes
    fake_compute.pending_polls = 0
    fake_compute.finish_deletions()
    assert fake_compute.live() == []


def _body(run: CloudRun) -> dict:
    from backend.ml.cloud.orchestrate import body_for
    body = body_for(run, ZONE, 0)
    body.pop("name")
    return body


# ---- teardown ----------------------------------------------------------------------------------

def _project_target(tmp_path, bucket: str | None = None) -> CloudTarget:
    return CloudTarget(overrides=[f"cloud.project={PROJECT}"]
                       + ([f"cloud.bucket={bucket}"] if bucket else []),
                       runs_dir=tmp_path / "runs")


def test_teardown_lists_then_deletes_only_this_projects_training_vms(gcs, fake_compute, tmp_path,
                                                                      capsys):
    _, bucket = gcs
    compute = Compute()
    start_vm(compute, _run(bucket), log=_quiet)
    other = dict(_body(_run(bucket)), name="someone-elses-vm", labels={"app": "web"})
    compute.insert(PROJECT, "us-central1-b", other)
    assert cloud_teardown_command(_project_target(tmp_path), yes=True) == 0
    out = capsys.readouterr().out
    listed, deleted = out.index("mb-life-0a1b2c-0"), out.index("deleted mb-life-0a1b2c-0")
    assert out.index("Training VMs to delete") < listed < deleted
    assert fake_compute.live() == ["someone-elses-vm"]
    assert "someone-elses-vm" not in fake_compute.deletes


def test_teardown_without_yes_needs_a_terminal_and_deletes_nothing(gcs, fake_compute, tmp_path):
    _, bucket = gcs
    start_vm(Compute(), _run(bucket), log=_quiet)
    with pytest.raises(UserError, match="add --yes"):
        cloud_teardown_command(_project_target(tmp_path), yes=False)
    assert fake_compute.deletes == [] and fake_compute.live() == ["mb-life-0a1b2c-0"]


def test_ctrl_c_before_the_insert_is_answered_still_finds_and_deletes_the_vm(gcs, fake_compute):
    _, bucket = gcs
    # Compute Engine takes the request; the Ctrl-C lands while its answer is being read.
    fake_compute.on_insert = once(ctrl_c_main_thread)
    with ctrl_c_raises_keyboard_interrupt(), pytest.raises(KeyboardInterrupt):
        Compute().insert(PROJECT, ZONE, {"name": NAME, **_body(_run(bucket))})
    assert NAME in fake_compute.deletes and fake_compute.live() == []


# ---- a preempted VM saving the run -------------------------------------------------------------

def test_a_preempted_vm_is_left_to_save_the_run_while_stopping_then_replaced(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    first = run.vms[0]["instance"]
    polls = iter(["preempt", "stopping", "stopping", "stopping", "replacement runs", "done"])
    deleted_while_stopping = []

    def sleep(_):
        step = next(polls)
        if step == "preempt":  # its shutdown script saves the run for 3 status polls
            fake_compute.preempt(first, stopping_polls=3)
        elif step == "stopping":
            deleted_while_stopping.extend(fake_compute.deletes)
        elif step == "done":
            _finish(client, run)

    lines = []
    marker = watch_run(compute, client, run, poll_seconds=0, log=lines.append, sleep=sleep)
    assert marker["status"] == "completed"
    assert deleted_while_stopping == [] and first not in fake_compute.deletes
    assert f"  {first}: STOPPING" in lines and any("waiting for" in line for line in lines)
    assert [r["body"]["name"] for r in fake_compute.inserts] == [first, "mb-life-0a1b2c-1"]
    assert run.vms[0]["ended_at"] and fake_compute.live() == []


# ---- continuing after a failed VM ------------------------------------------------------------

def _failed_run_in_bucket(client, run: CloudRun, tmp_path, with_checkpoint: bool) -> dict:
    """What a replacement VM that failed leaves: its run directory and a failed marker."""
    from backend.ml.checkpoint_files import write_manifest

    run_dir = tmp_path / "vm_run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "results.json").write_text('{"status": "failed", "error": "RuntimeError: CUDA '
                                          'out of memory"}')
    if with_checkpoint:
        checkpoint = run_dir / "checkpoints" / "step-000004"
        (checkpoint / "model").mkdir(parents=True)
        (checkpoint / "model" / "model.safetensors").write_bytes(b"weights")
        (checkpoint / "training_state.pt").write_bytes(b"state")
        write_manifest(checkpoint)
    storage.upload_tree(client, run_dir, f"{run.url}/run")
    now = datetime.now(timezone.utc)
    run.vms = [{"instance": f"mb-life-0a1b2c-{index}", "zone": ZONE, "ended_at": now.isoformat(),
                "created_at": (now - timedelta(minutes=30)).isoformat()} for index in (0, 1)]
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    marker = {"status": "failed", "exit_code": 1, "reason": "RuntimeError: CUDA out of memory",
              "failed_step": "train", "instance": "mb-life-0a1b2c-1", "zone": ZONE}
    storage.write_json(client, f"{run.url}/cloud/DONE.json", marker)
    return marker


def test_continue_after_a_failed_vm_resumes_from_the_newest_valid_checkpoint(
        gcs, fake_compute, tmp_path, capsys):
    from backend.ml.cloud.commands import sync_command

    client, bucket = gcs
    run = _run(bucket)
    old_marker = _failed_run_in_bucket(client, run, tmp_path, with_checkpoint=True)
    marker_at_start = []

    def new_vm_runs(*_):  # the new VM starts, then finishes
        marker_at_start.append(storage.read_json(client, f"{run.url}/cloud/DONE.json"))
        storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})

    fake_compute.on_insert = new_vm_runs
    assert sync_command(_project_target(tmp_path, bucket), "life_0a1b2c", continue_run=True) == 0
    out = capsys.readouterr().out
    assert ("Run life_0a1b2c failed on VM mb-life-0a1b2c-1 (exit code 1, step train): "
            "RuntimeError: CUDA out of memory") in out
    assert "Continuing from its newest valid checkpoint, step-000004" in out
    assert [r["body"]["name"] for r in fake_compute.inserts] == ["mb-life-0a1b2c-2"]
    assert marker_at_start == [None]  # the new VM's watch cannot see the old marker
    kept = storage.read_json(client, f"{run.url}/cloud/DONE-mb-life-0a1b2c-1.json")
    assert kept == old_marker


def test_continue_after_a_failed_vm_without_a_checkpoint_refuses_and_starts_nothing(
        gcs, fake_compute, tmp_path):
    from backend.ml.cloud.commands import sync_command

    client, bucket = gcs
    run = _run(bucket)
    old_marker = _failed_run_in_bucket(client, run, tmp_path, with_checkpoint=False)
    with pytest.raises(CloudError, match=r"failed on VM mb-life-0a1b2c-1 .*no valid checkpoint "
                                         r"in gs://.*nothing was started.*--cloud"):
        sync_command(_project_target(tmp_path, bucket), "life_0a1b2c", continue_run=True)
    assert fake_compute.inserts == []
    assert storage.read_json(client, f"{run.url}/cloud/DONE.json") == old_marker
