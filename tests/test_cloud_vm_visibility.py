"""What a user sees of a VM that has not reached training: a VM whose startup fails before the
code (and with it the agent) is unpacked still uploads its log, writes a failed completion
marker naming the step and deletes itself, with curl and the metadata server's token alone; and
``cloud logs`` shows the serial port of a VM that is still installing."""

from __future__ import annotations

import pytest

from backend.ml.cloud import storage
from backend.ml.cloud.commands import CloudTarget, cloud_logs_command
from backend.ml.cloud.orchestrate import CloudRun, upload_inputs
from support.cloud import (
    PROJECT,
    RUN_ID,
    ZONE,
    boot_instance,
    run_vm,
    startup_script,
    tiny_cloud_config,
)
from support.fakes.fake_metadata import FakeMetadata


@pytest.fixture
def metadata():
    fake = FakeMetadata().start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("step, broken, reason", [
    ("prepare", {"prepare_cmd": "false"}, "preparing the VM failed"),
    ("download", {}, "cannot fetch the code"),     # nothing was uploaded: no code.tar.gz
])
def test_a_vm_failing_before_its_code_is_unpacked_leaves_its_log_a_marker_and_no_vm(
        gcs, fake_compute, metadata, tmp_path, step, broken, reason):
    client, bucket = gcs
    run_url = f"gs://{bucket}/runs/{RUN_ID}"
    boot_instance(fake_compute, ZONE, "mb-vm-0")
    script = startup_script(bucket, tmp_path / "vm0", "mb-vm-0", fake_compute.url,
                            environment={"GCE_METADATA_HOST": metadata.host}, **broken)
    vm = run_vm(script)
    output = vm.stdout + vm.stderr
    assert vm.returncode != 0, output
    marker = storage.read_json(client, f"{run_url}/cloud/DONE.json")
    assert marker is not None, output
    assert (marker["status"], marker["reason"], marker["failed_step"]) == ("failed", reason, step)
    assert marker["instance"] == "mb-vm-0" and marker["exit_code"] != 0
    log = storage.read_text(client, f"{run_url}/cloud/mb-vm-0.log")
    assert f"run {RUN_ID} on mb-vm-0" in log and reason in log
    assert fake_compute.deletes == ["mb-vm-0"] and fake_compute.live() == []
    assert "poweroff-would-run" not in output
    # It asked the metadata server for the VM's token, and wrote it nowhere.
    assert metadata.token_requests >= 1
    assert metadata.token not in output and metadata.token not in log
    assert not any(metadata.token in path.read_text(errors="ignore")
                   for path in (tmp_path / "vm0").rglob("*") if path.is_file())


def test_a_failure_after_the_code_is_unpacked_still_goes_through_the_agent(
        gcs, fake_compute, metadata, tmp_path):
    client, bucket = gcs
    run = CloudRun(run_id=RUN_ID, project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], spec={})
    upload_inputs(client, run, tiny_cloud_config(), [], tmp_path, log=lambda *_: None)
    boot_instance(fake_compute, ZONE, "mb-vm-0")
    script = startup_script(bucket, tmp_path / "vm0", "mb-vm-0", fake_compute.url,
                            environment={"GCE_METADATA_HOST": metadata.host},
                            torch_install_cmd="false")
    vm = run_vm(script)
    assert vm.returncode != 0
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    assert marker["failed_step"] == "install"
    assert marker["reason"].startswith("installing torch from ")
    assert "manifest" in marker  # written by the agent, after a verified upload
    assert metadata.token_requests == 0 and fake_compute.live() == []


def test_cloud_logs_shows_the_serial_port_of_a_vm_that_is_still_installing(
        gcs, fake_compute, tmp_path, capsys):
    client, bucket = gcs
    run = CloudRun(run_id="serial_abc123", project=PROJECT, region="us-central1",
                   bucket=bucket, zones=[ZONE], spec={},
                   vms=[{"instance": "mb-serial-abc123-0", "zone": ZONE,
                         "created_at": "2026-12-01T10:00:00+00:00"}])
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    boot_instance(fake_compute, ZONE, "mb-serial-abc123-0")
    fake_compute.write_serial("mb-serial-abc123-0", "[media-bias] installing torch\n")
    polls = []

    def sleep(_):  # the VM waits for its driver, then finishes and deletes itself
        polls.append(1)
        if len(polls) == 1:
            fake_compute.write_serial("mb-serial-abc123-0", "[media-bias] nvidia-smi: GPU 0\n")
        else:
            fake_compute.expire("mb-serial-abc123-0")
            storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "failed"})

    target = CloudTarget(overrides=[f"cloud.project={PROJECT}", f"cloud.bucket={bucket}"],
                         runs_dir=tmp_path / "runs")
    assert cloud_logs_command(target, "serial_abc123", follow=True, sleep=sleep) == 0
    out = capsys.readouterr().out
    assert out.count(f"==> serial port 1 of mb-serial-abc123-0 ({ZONE}) <==") == 1
    assert out.count("installing torch") == 1 and out.count("nvidia-smi: GPU 0") == 1
    assert out.index("installing torch") < out.index("nvidia-smi") < out.index("==> run ")
    # Each poll asked from where the previous answer ended; the gone VM (404) was not shown.
    starts = [request["query"].get("start", ["0"])[0] for request in fake_compute.requests
              if request["path"].endswith("/serialPort")]
    assert starts == ["0", str(len("[media-bias] installing torch\n")),
                      str(len("[media-bias] installing torch\n[media-bias] nvidia-smi: GPU 0\n"))]
