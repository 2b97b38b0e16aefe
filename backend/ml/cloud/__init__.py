"""Training on a GCP GPU VM: cost estimate, VM lifecycle, results through Cloud Storage.

Only the CLI imports this package (``run_experiment.py CONFIG --cloud`` and the ``cloud``
subcommands); see docs/cloud.md. The google-cloud clients are
imported inside the functions that use them.
"""
