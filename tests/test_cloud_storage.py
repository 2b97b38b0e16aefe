"""Cloud Storage sync with the real google-cloud-storage client against gcp-storage-emulator."""

from __future__ import annotations

import base64
import hashlib

import google_crc32c
import pytest

from backend.ml.cloud import storage


def _tree(root, files: dict[str, bytes]):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


FILES = {"results.json": b'{"status": "running"}\n', "metrics.jsonl": b'{"step": 2}\n',
         "checkpoints/step-000002/training_state.pt": bytes(range(256)) * 4000,
         "checkpoints/step-000002/model/config.json": b"{}"}


def test_upload_then_download_round_trips_every_file(gcs, tmp_path):
    client, bucket = gcs
    _tree(tmp_path / "run", {**FILES, ".results.json.abc.tmp": b"half-written"})
    report = storage.upload_tree(client, tmp_path / "run", f"gs://{bucket}/runs/x/run")
    assert sorted(report.transferred) == sorted(FILES)  # the hidden temporary is not shipped

    report = storage.download_tree(client, f"gs://{bucket}/runs/x/run", tmp_path / "back")
    assert sorted(report.transferred) == sorted(FILES)
    for name, data in FILES.items():
        assert (tmp_path / "back" / name).read_bytes() == data


def test_objects_carry_the_md5_and_crc32c_of_the_local_files(gcs, tmp_path):
    client, bucket = gcs
    _tree(tmp_path / "run", FILES)
    storage.upload_tree(client, tmp_path / "run", f"gs://{bucket}/r")
    for blob in client.list_blobs(bucket, prefix="r/"):
        data = FILES[blob.name[2:]]
        assert blob.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()
        assert blob.crc32c == base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def test_sync_is_incremental_and_mirrors_deletions(gcs, tmp_path):
    client, bucket = gcs
    url = f"gs://{bucket}/runs/y/run"
    _tree(tmp_path / "run", FILES)
    storage.upload_tree(client, tmp_path / "run", url)

    (tmp_path / "run" / "metrics.jsonl").write_bytes(b'{"step": 2}\n{"step": 4}\n')
    (tmp_path / "run" / "checkpoints" / "step-000002" / "model" / "config.json").unlink()
    report = storage.upload_tree(client, tmp_path / "run", url, delete_extra=True)
    assert report.transferred == ["metrics.jsonl"]
    assert report.unchanged == 2
    assert report.deleted == ["checkpoints/step-000002/model/config.json"]

    storage.download_tree(client, url, tmp_path / "local")
    (tmp_path / "run" / "results.json").write_bytes(b'{"status": "completed"}\n')
    storage.upload_tree(client, tmp_path / "run", url)
    report = storage.download_tree(client, url, tmp_path / "local")
    assert report.transferred == ["results.json"] and report.unchanged == 2
    assert (tmp_path / "local" / "results.json").read_bytes() == b'{"status": "completed"}\n'


def test_a_download_that_does_not_match_the_listed_checksum_is_rejected(gcs, tmp_path):
    client, bucket = gcs
    blob = client.bucket(bucket).blob("runs/z/run/results.json")
    blob.upload_from_string(b"original")
    listed = next(iter(client.list_blobs(bucket, prefix="runs/z/run/")))
    listed.crc32c = base64.b64encode(google_crc32c.Checksum(b"something else").digest()).decode()
    target = tmp_path / "results.json"
    target.write_bytes(b"previous good copy")
    with pytest.raises(storage.StorageError, match="arrived corrupted"):
        storage.download_blob_verified(listed, target)
    assert target.read_bytes() == b"previous good copy"  # never replaced by a bad download
    assert not list(tmp_path.glob(".*download"))


def test_new_bucket_has_uniform_access_and_no_public_access(gcs):
    client, _ = gcs
    bucket, created = storage.ensure_bucket(client, "fresh-media-bias-runs", "us-central1")
    assert created
    reread = client.get_bucket("fresh-media-bias-runs")
    assert reread.iam_configuration.uniform_bucket_level_access_enabled
    assert reread.iam_configuration.public_access_prevention == "enforced"
    again, created = storage.ensure_bucket(client, "fresh-media-bias-runs", "us-central1")
    assert not created and storage.bucket_warnings(again) == []


def test_json_markers_and_bad_urls(gcs):
    client, bucket = gcs
    storage.write_json(client, f"gs://{bucket}/runs/m/cloud/DONE.json", {"status": "completed"})
    assert storage.read_json(client, f"gs://{bucket}/runs/m/cloud/DONE.json") == {
        "status": "completed"}
    assert storage.read_json(client, f"gs://{bucket}/runs/m/cloud/missing.json") is None
    with pytest.raises(storage.StorageError, match="not a gs:// URL"):
        storage.parse_gs_url("s3://elsewhere/x")
    with pytest.raises(storage.StorageError, match="does not exist"):
        storage.require_bucket(client, "no-such-bucket-here")
