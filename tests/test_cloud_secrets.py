"""The code archive that goes to the bucket: planted secrets stay home, ignored files too; the
local commit and dirty state travel in the launch record and end up in results.json."""

from __future__ import annotations

import json
import subprocess
import tarfile

from backend.ml.cloud import storage
from backend.ml.cloud.orchestrate import CloudRun, record_cloud_section, upload_inputs
from backend.ml.config.loading import config_from_dict
from backend.ml.run_directory import SOURCE_PROVENANCE_FILE, source_provenance
from support.cloud import PROJECT
from support.configs import tiny_config

SERVICE_ACCOUNT_JSON = json.dumps({"type": "service_account", "project_id": "p",
                                   "private_key_id": "0123", "client_email": "x@p.iam"})
PLANTED = {".env": "WANDB_API_KEY=abc123", "deploy/server.pem": "-----BEGIN PRIVATE KEY-----",
           "gcp-key.json": "{}", "config/prod.json": SERVICE_ACCOUNT_JSON,
           "notes/.env.local": "TOKEN=1", "home/id_ed25519": "key",
           ".envrc": "export WANDB_API_KEY=abc123", "tls/server.key": "-----BEGIN RSA-----",
           ".git-credentials": "https://u:ghp_token@github.com", ".pypirc": "password = x",
           ".boto": "gs_secret_access_key = x", "config/secrets.yaml": "wandb_key: x",
           "deploy/secrets.toml": "token = 'x'"}
KEPT = {"run_experiment.py": "print('train')\n", "backend/ml/model.py": "x = 1\n",
        "experiments/configs/base.yaml": "seed: 1\n", "notes/todo.md": "untracked but kept\n",
        ".gitignore": "ignored.log\n"}


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _working_tree(tmp_path):
    repo = tmp_path / "project"
    for name, text in {**KEPT, **PLANTED, "ignored.log": "noise"}.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "init", "-q")
    # Even committed by mistake, a key file does not travel.
    _git(repo, "add", "run_experiment.py", "backend", "experiments", ".gitignore",
         "gcp-key.json")
    _git(repo, "commit", "-q", "-m", "init")
    return repo


def test_planted_secrets_and_ignored_files_are_absent_from_the_uploaded_archive(gcs, tmp_path):
    client, bucket = gcs
    repo = _working_tree(tmp_path)
    run = CloudRun(run_id="sec_000001", project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[], spec={})
    work = tmp_path / "work"
    work.mkdir()
    upload_inputs(client, run, config_from_dict(tiny_config()), [], work, log=lambda *_: None,
                  code_root=repo)
    fetched = tmp_path / "fetched.tar.gz"
    client.bucket(bucket).blob("runs/sec_000001/code.tar.gz").download_to_filename(str(fetched))
    with tarfile.open(fetched) as archive:
        names = set(archive.getnames())
        text = b"".join(archive.extractfile(member).read() for member in archive.getmembers()
                        if member.isfile())
    assert names == set(KEPT) | {SOURCE_PROVENANCE_FILE}
    assert b"abc123" not in text and b"PRIVATE KEY" not in text and b"service_account" not in text


def test_the_archive_carries_commit_branch_and_the_diff_of_what_it_ships(gcs, tmp_path):
    client, bucket = gcs
    repo = _working_tree(tmp_path)
    (repo / "backend/ml/model.py").write_text("x = 2  # tuned on the laptop\n")
    (repo / "gcp-key.json").write_text('{"private_key": "-----BEGIN PRIVATE KEY-----"}')
    run = CloudRun(run_id="sec_000002", project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[], spec={})
    work = tmp_path / "work"
    work.mkdir()
    upload_inputs(client, run, config_from_dict(tiny_config()), [], work, log=lambda *_: None,
                  code_root=repo)
    fetched = tmp_path / "fetched.tar.gz"
    client.bucket(bucket).blob("runs/sec_000002/code.tar.gz").download_to_filename(str(fetched))
    unpacked = tmp_path / "vm-code"  # as the VM unpacks it: no .git
    with tarfile.open(fetched) as archive:
        archive.extractall(unpacked, filter="data")
    provenance = source_provenance(unpacked)
    assert provenance["git_commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert provenance["git_branch"] == _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    assert provenance["git_dirty"] is True
    assert "+x = 2  # tuned on the laptop" in provenance["git_diff"]
    # The key file changed too, but it is not shipped, so neither is its diff.
    assert "gcp-key.json" not in provenance["git_diff"] and "PRIVATE" not in provenance["git_diff"]
    assert provenance["git_untracked"] == ["notes/todo.md"]


def test_the_launch_source_travels_to_the_local_results_json(gcs, tmp_path):
    client, bucket = gcs
    state = {"git_commit": "0123abc", "git_branch": "main", "git_dirty": False}
    run = CloudRun(run_id="sec_000003", project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[], spec={"machine_type": "n1-standard-4", "gpu_type": "t4",
                                   "gpu_count": 1, "preemptible": True}, source=state)
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    saved = CloudRun.from_dict(storage.read_json(client, f"{run.url}/cloud/launch.json"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"status": "completed"}))
    record_cloud_section(run_dir, saved, {"status": "completed"})
    results = json.loads((run_dir / "results.json").read_text())
    assert results["cloud"]["source"] == state
