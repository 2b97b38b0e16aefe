"""Domain-adaptive pre-training: masked-language-model training of an encoder on news sentences.

>>> from backend.ml.pretraining import run_pretraining
>>> run_dir = run_pretraining(config)  # doctest: +SKIP
>>> # a fine-tuning config then sets model.model_name: <run_dir>/encoder

Imports the data, models and training layers; nothing imports it but the CLI.
"""

from .corpus import Corpus, collect_corpus, read_text_file
from .model import ENCODER_DIR, build_masked_lm, save_encoder
from .run import run_pretraining

__all__ = ["ENCODER_DIR", "Corpus", "build_masked_lm", "collect_corpus", "read_text_file",
           "run_pretraining", "save_encoder"]
