"""Fixtures shared by every test module: an offline environment, the BABE files, one tiny
trained run, the Google Cloud stand-ins on loopback, and the guard that refuses the network.

Plain helpers (the CLI, configs, run builders, the fakes themselves) are in ``support``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import uuid
from pathlib import Path

import pytest
import torch

from support.cli import REPO_ROOT, run_cli
from support.cloud import PROJECT
from support.configs import tiny_config, write_config
from support.fakes.fake_compute import FakeCompute
from support.fakes.storage_emulator import emulator_url
from support.runs import only_run_dir

FRESH_PROCESS_THREADS = torch.get_num_threads()
BABE_DIR = Path(os.environ.get("BABE_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "babe"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Give every test the thread count a fresh process starts with. A command run in-process
    with ``--threads N`` sets torch's count for the whole worker, and a later in-process training
    would then sum in another order than the same training in a new process (weights apart by
    ~1e-7), which the tests comparing the two to the last bit must not see."""
    yield
    if torch.get_num_threads() != FRESH_PROCESS_THREADS:
        torch.set_num_threads(FRESH_PROCESS_THREADS)


@pytest.fixture
def babe_dir() -> Path:
    if not (BABE_DIR / "final_labels_SG1.csv").is_file():
        pytest.skip(f"BABE files not found in {BABE_DIR} (set BABE_DATA_DIR or place them in "
                    f"../shared/data/babe)")
    return BABE_DIR


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """One complete tiny training through the real CLI, shared by every test that reads a run."""
    workspace = tmp_path_factory.mktemp("tiny_run")
    config_path = write_config(workspace, tiny_config())
    run_cli(str(config_path), "--output-dir", str(workspace / "runs"), check=True)
    return only_run_dir(workspace / "runs")


# ---- the network guard ---------------------------------------------------------------------

class _NetworkGuard:
    """An audit hook that refuses every name lookup and connection beyond this machine while a
    test holds ``no_network``; loopback stays open for the storage emulator and the fakes.

    An audit hook sees the lookups and connections of any Python code (HTTP clients, hub
    downloads, asyncio), not only those made through one patched method. It cannot be removed
    once added, so it is added on first use and is idle between guarded tests.
    """

    attempts: list[str] | None = None  # None: no test is guarded now
    installed = False

    @staticmethod
    def is_loopback(host) -> bool:
        if host is None:  # getaddrinfo(None, port) names this machine
            return True
        host = host.decode() if isinstance(host, bytes) else str(host)
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @classmethod
    def audit(cls, event: str, args) -> None:
        if cls.attempts is None:
            return
        if event == "socket.getaddrinfo" and not cls.is_loopback(args[0]):
            cls.attempts.append(f"lookup {args[0]}")
            raise OSError(f"test blocked a network lookup of {args[0]}")
        if event == "socket.connect":
            address = args[1]  # a path for a Unix socket, (host, port, ...) for IP
            if isinstance(address, tuple) and not cls.is_loopback(address[0]):
                cls.attempts.append(f"connect {address}")
                raise OSError(f"test blocked a connection to {address}")


@pytest.fixture(autouse=True)
def no_network():
    """Every test: refuse anything but loopback; yields the refused attempts, and fails a test
    that made one even when the code under test swallowed the error."""
    if not _NetworkGuard.installed:
        sys.addaudithook(_NetworkGuard.audit)
        _NetworkGuard.installed = True
    attempts: list[str] = []
    _NetworkGuard.attempts = attempts
    try:
        yield attempts
    finally:
        _NetworkGuard.attempts = None
    assert attempts == [], f"the test reached for the network: {attempts}"


# ---- Google Cloud on loopback ----------------------------------------------------------------

@pytest.fixture
def gcs(monkeypatch):
    """(real storage client on the emulator, a fresh bucket name)."""
    from backend.ml.cloud.storage import storage_client

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_url())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = storage_client(PROJECT)
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    client.create_bucket(name)
    return client, name


@pytest.fixture
def fake_compute(monkeypatch):
    """The fake Compute Engine endpoint; MEDIA_BIAS_COMPUTE_ENDPOINT points the code at it."""
    fake = FakeCompute().start()
    fake.add_service_account(PROJECT, "media-bias-trainer")  # as scripts/gcp_setup.py leaves it
    monkeypatch.setenv("MEDIA_BIAS_COMPUTE_ENDPOINT", fake.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield fake
    fake.stop()
