"""The XLM-RoBERTa family end to end, offline: a tiny random XLM-R with a SentencePiece
tokenizer trained on the fly is fine-tuned on de/fr/it/en sentences through the real training
path, saved, read back by transformers, and served by BiasClassifier, which then knows the
four languages it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import SentencePieceUnigramTokenizer
from transformers import (
    AutoModelForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

from backend.ml.bias_classifier import BiasClassifier
from backend.ml.config import ExperimentConfig
from backend.ml.languages import is_multilingual_encoder
from backend.ml.run import run_experiment
from backend.ml.serving.retrain import retrain
from support.configs import tiny_config
from support.multilingual_news import NEWS_BY_LANGUAGE

SPANISH = "El gobierno aprobó el nuevo presupuesto el martes por la tarde."
SPANISH_FEEDBACK = [
    "La policía detuvo a dos hombres tras el robo en Basilea.",
    "Las negociaciones entre los sindicatos y los empresarios fracasaron.",
    "El aeropuerto espera un número récord de pasajeros este verano.",
    "Los precios de la electricidad volverán a subir el próximo año.",
    "Un deslizamiento de tierra dejó aislado al pueblo.",
    "El tribunal anuló la prohibición por ser contraria a la constitución.",
]


def tiny_xlmr_encoder(directory: Path) -> Path:
    """A randomly initialised two-layer XLM-R encoder whose Unigram (SentencePiece) vocabulary
    is trained on the four languages' sentences, saved like a hub checkpoint."""
    texts = [text for sentences in NEWS_BY_LANGUAGE.values() for text in sentences]
    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(texts, vocab_size=400, unk_token="<unk>", show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = XLMRobertaTokenizer(
        tokenizer_object=unigram._tokenizer, bos_token="<s>", eos_token="</s>",
        cls_token="<s>", sep_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", model_max_length=64)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=37,
                              max_position_embeddings=64 + tokenizer.pad_token_id + 1,
                              pad_token_id=tokenizer.pad_token_id, type_vocab_size=1,
                              bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    XLMRobertaModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def multilingual_run(tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("xlmr")
    labelled = workspace / "swiss_news.csv"
    rows = [f"{text};{'Biased' if number % 2 else 'Non-biased'}"
            for sentences in NEWS_BY_LANGUAGE.values()
            for number, text in enumerate(sentences)]
    labelled.write_text("text;label_bias\n" + "\n".join(rows) + "\n", encoding="utf-8")
    encoder = tiny_xlmr_encoder(workspace / "tiny-xlm-roberta")
    config = ExperimentConfig.from_dict(tiny_config(
        experiment_name="tiny_xlmr",
        model={"architecture": "roberta", "model_name": str(encoder), "pretrained": True,
               "num_labels": 2},
        data={"dataset": "babe", "path": str(labelled), "max_samples": 0,
              "filter_no_agreement": True},
        training={"epochs": 1, "learning_rate": 1e-3},
        logging={"tensorboard": False, "log_steps": 5, "save_steps": 1000}))
    return run_experiment(config, workspace / "runs", run_id="tiny_xlmr")


def test_a_tiny_xlm_roberta_trains_saves_and_reads_its_languages(multilingual_run):
    results = json.loads((multilingual_run / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert results["model"]["architecture"] == "roberta"
    assert results["data"]["languages"]["languages"] == ["de", "en", "fr", "it"]
    final_model = multilingual_run / "final_model"
    saved = AutoModelForSequenceClassification.from_pretrained(final_model)
    assert saved.config.model_type == "xlm-roberta"
    assert is_multilingual_encoder(str(final_model))
    classifier = BiasClassifier(language_policy="abstain").load_model(multilingual_run)
    assert classifier.training_languages == ["de", "en", "fr", "it"]
    german, spanish = classifier.predict_with_confidence([NEWS_BY_LANGUAGE["de"][3], SPANISH])
    assert german["status"] == "ok" and german["supported_language"] is True
    assert german["label"] in ("Biased", "Non-biased") and german["calibrated"] is True
    assert spanish["language"] == "es" and spanish["status"] == "abstained"


@pytest.mark.slow
def test_retrain_with_include_languages_teaches_the_multilingual_model_a_new_language(
        multilingual_run, tmp_path):
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("".join(json.dumps({"key": f"id:es-{number}", "text": text,
                                            "label": "Biased" if number % 2 else "Non-biased"})
                                + "\n" for number, text in enumerate(SPANISH_FEEDBACK)),
                        encoding="utf-8")
    retrained = retrain(str(multilingual_run), runs_dir=multilingual_run.parent,
                        registry_dir=tmp_path / "registry", log_dir=tmp_path,
                        feedback_file=feedback, output_dir=tmp_path / "runs",
                        run_id="tiny_xlmr_es", register=False, include_languages=["es"])
    assert retrained["counts"]["feedback"] == 6 and retrained["languages"]["left_out"] == {}
    classifier = BiasClassifier(language_policy="abstain").load_model(retrained["run_dir"])
    assert "es" in classifier.training_languages
    assert classifier.predict_with_confidence(SPANISH)["status"] == "ok"
