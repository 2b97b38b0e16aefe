"""Serving trained runs over HTTP: traffic split, batching, prediction log, feedback, retrain.

Reads run directories and the model registry; ``retrain`` alone builds new runs, through the
composition root's public ``run_experiment``.
"""
