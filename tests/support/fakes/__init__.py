"""Loopback stand-ins for Google Cloud used by the cloud tests (nothing leaves 127.0.0.1)."""
