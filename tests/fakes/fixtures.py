"""Fixtures of the cloud tests; test modules import the ones they use."""

from __future__ import annotations

import uuid

import pytest

from fakes.fake_compute import FakeCompute
from fakes.storage_emulator import emulator_url

PROJECT = "test-project"


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
