"""Cloud Storage: the bucket, and incremental, checksum-verified sync of directory trees.

A file is transferred only when its CRC32C differs from the other side's; every download is
checked against the object's CRC32C before it replaces the local file. With
``STORAGE_EMULATOR_HOST`` set (tests, local emulators) the client talks to that endpoint with
anonymous credentials.

>>> client = storage_client("my-project")  # doctest: +SKIP
>>> upload_tree(client, "experiments/runs/x_3f9a1c",
...             "gs://my-bucket/runs/x_3f9a1c/run")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket, Client


class StorageError(UserError):
    """A bucket or object is missing, unreachable, or arrived corrupted."""


@dataclass
class SyncReport:
    transferred: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.transferred)} transferred, {self.unchanged} unchanged, "
                f"{len(self.deleted)} deleted")


def storage_client(project: str | None = None) -> Client:
    """A google-cloud-storage client: Application Default Credentials, or the emulator."""
    from google.cloud.storage import Client

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return Client(project=project or "local-emulator")
    return Client(project=project)


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not url.startswith("gs://") or len(url) <= 5:
        raise StorageError(f"not a gs:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def gs_url(bucket: str, *parts: str) -> str:
    return "gs://" + "/".join([bucket, *(part.strip("/") for part in parts if part)])


def file_crc32c(path: str | os.PathLike) -> str:
    """Base64 big-endian CRC32C, the form Cloud Storage reports in ``blob.crc32c``."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def _skipped(relative: Path) -> bool:
    # Hidden entries are atomic-write temporaries (.results.json.xyz.tmp) and staging directories
    # (.final_model.partial): half-written by definition, never worth shipping.
    return any(part.startswith(".") for part in relative.parts)


def local_files(root: str | os.PathLike) -> dict[str, Path]:
    """Every regular file under ``root`` by its POSIX path relative to root, hidden ones skipped."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not _skipped(relative):
            found[relative.as_posix()] = path
    return found


def remote_files(client: Client, url: str) -> dict[str, Blob]:
    """Blobs under ``url`` by their name relative to it."""
    bucket_name, prefix = parse_gs_url(url)
    lead = prefix + "/" if prefix else ""
    return {blob.name[len(lead):]: blob for blob in client.list_blobs(bucket_name, prefix=lead)
            if not blob.name.endswith("/")}


def upload_tree(client: Client, local_dir: str | os.PathLike, url: str,
                delete_extra: bool = False) -> SyncReport:
    """Upload files that are new or changed; with ``delete_extra`` remove objects gone locally."""
    from google.api_core import exceptions

    bucket_name, prefix = parse_gs_url(url)
    bucket = client.bucket(bucket_name)
    remote = remote_files(client, url)
    report = SyncReport()
    for name, path in local_files(local_dir).items():
        try:
            crc = file_crc32c(path)
        except FileNotFoundError:  # removed meanwhile (an old checkpoint being rotated)
            continue
        blob = remote.get(name)
        if blob is not None and blob.crc32c == crc:
            report.unchanged += 1
            continue
        target = bucket.blob(f"{prefix}/{name}" if prefix else name)
        try:
            target.upload_from_filename(str(path), checksum="crc32c")
        except FileNotFoundError:
            continue
        except exceptions.GoogleAPICallError as error:
            raise StorageError(f"upload of {path} to {url}/{name} failed: {error}") from None
        report.transferred.append(name)
    if delete_extra:
        present = set(local_files(local_dir))
        for name, blob in remote.items():
            if name not in present:
                try:
                    blob.delete()
                except exceptions.NotFound:
                    pass
                report.deleted.append(name)
    return report


def download_blob_verified(blob: Blob, destination: Path) -> None:
    """Download to a temporary file, check its CRC32C, then move it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.download")
    expected = blob.crc32c  # as listed; the download may refresh the blob's properties
    try:
        blob.download_to_filename(str(temporary), checksum="crc32c")
        if expected and file_crc32c(temporary) != expected:
            raise StorageError(f"gs://{blob.bucket.name}/{blob.name} arrived corrupted (CRC32C "
                               f"mismatch); run the sync again")
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def download_tree(client: Client, url: str, local_dir: str | os.PathLike,
                  delete_extra: bool = False) -> SyncReport:
    """Download objects that are new or changed; with ``delete_extra`` remove local extras."""
    from google.api_core import exceptions

    local_dir = Path(local_dir)
    report = SyncReport()
    remote = remote_files(client, url)
    for name, blob in remote.items():
        destination = local_dir / name
        if destination.is_file() and file_crc32c(destination) == blob.crc32c:
            report.unchanged += 1
            continue
        try:
            download_blob_verified(blob, destination)
        except exceptions.NotFound:  # deleted between listing and download
            continue
        except exceptions.GoogleAPICallError as error:
            raise StorageError(f"download of gs://{blob.bucket.name}/{blob.name} failed: "
                               f"{error}") from None
        report.transferred.append(name)
    if delete_extra:
        for name, path in local_files(local_dir).items():
            if name not in remote:
                path.unlink()
                report.deleted.append(name)
    return report


def upload_file(client: Client, path: str | os.PathLike, url: str) -> None:
    bucket_name, name = parse_gs_url(url)
    client.bucket(bucket_name).blob(name).upload_from_filename(str(path), checksum="crc32c")


def write_json(client: Client, url: str, data: dict) -> None:
    bucket_name, name = parse_gs_url(url)
    client.bucket(bucket_name).blob(name).upload_from_string(
        json.dumps(data, indent=2) + "\n", content_type="application/json", checksum="crc32c")


def read_json(client: Client, url: str) -> dict | None:
    """The JSON object at ``url``, or None when there is none."""
    from google.api_core import exceptions

    bucket_name, name = parse_gs_url(url)
    try:
        text = client.bucket(bucket_name).blob(name).download_as_text()
    except exceptions.NotFound:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_text(client: Client, url: str) -> str | None:
    from google.api_core import exceptions

    bucket_name, name = parse_gs_url(url)
    try:
        return client.bucket(bucket_name).blob(name).download_as_text()
    except exceptions.NotFound:
        return None


def ensure_bucket(client: Client, name: str, location: str) -> tuple[Bucket, bool]:
    """The bucket ``name``, created when missing: uniform access, public access prevented.

    Returns ``(bucket, created)``. An existing bucket is left as it is; see
    :func:`bucket_warnings`.
    """
    from google.api_core import exceptions

    try:
        bucket = client.get_bucket(name)
        created = False
    except exceptions.NotFound:
        bucket = client.bucket(name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        try:
            bucket = client.create_bucket(bucket, location=location)
        except exceptions.Conflict:
            raise StorageError(f"bucket name {name!r} is taken by another project; set "
                               f"cloud.bucket to a name of your own") from None
        created = True
        settings = bucket.iam_configuration
        if not settings.uniform_bucket_level_access_enabled or \
                settings.public_access_prevention != "enforced":
            # Verify rather than trust: apply the settings again if creation dropped them.
            settings.uniform_bucket_level_access_enabled = True
            settings.public_access_prevention = "enforced"
            bucket.patch()
    except exceptions.Forbidden:
        raise StorageError(f"bucket {name!r} exists but this account may not read it; set "
                           f"cloud.bucket to a bucket of your project") from None
    return bucket, created


def bucket_warnings(bucket) -> list[str]:
    """What is less strict than a new bucket on an existing one."""
    config = bucket.iam_configuration
    warnings = []
    if not config.uniform_bucket_level_access_enabled:
        warnings.append(f"gs://{bucket.name}: uniform bucket-level access is off (per-object "
                        f"ACLs can make results public)")
    if config.public_access_prevention != "enforced":
        warnings.append(f"gs://{bucket.name}: public access prevention is not enforced")
    return warnings


def require_bucket(client: Client, name: str) -> Bucket:
    """The bucket ``name``; a clear error when it does not exist."""
    from google.api_core import exceptions

    try:
        return client.get_bucket(name)
    except exceptions.NotFound:
        raise StorageError(f"bucket gs://{name} does not exist; create it with python "
                           f"scripts/gcp_setup.py --project PROJECT --bucket {name} --setup-only"
                           ) from None
