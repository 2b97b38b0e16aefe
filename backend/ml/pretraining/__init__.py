"""Domain-adaptive pre-training: masked-language-model training of an encoder on news sentences.

>>> from backend.ml.pretraining import run_pretraining
>>> run_dir = run_pretraining(config)  # doctest: +SKIP
>>> # a fine-tuning config then sets model.model_name: <run_dir>/encoder

Imports the data, models and training layers; the CLI imports it, and ``run`` hands it
``resume`` of a pre-training run directory. The names below
are imported on first use, so that the CLI's parser can import ``.commands`` without torch.
"""

from ..lazy_exports import lazy_exports

__all__ = ["ENCODER_DIR", "Corpus", "build_masked_lm", "collect_corpus", "resume_pretraining",
           "run_pretraining", "save_encoder"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Corpus": ".corpus", "collect_corpus": ".corpus",
    "ENCODER_DIR": ".model", "build_masked_lm": ".model", "save_encoder": ".model",
    "resume_pretraining": ".run", "run_pretraining": ".run"})
