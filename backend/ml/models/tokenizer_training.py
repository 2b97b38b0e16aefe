"""Fast tokenizers trained on the training sentences, for models built with ``pretrained: false``.

WordPiece (BERT's scheme) for bert, distilbert and electra; byte-level BPE with ``<s> </s> <pad>``
for roberta and mpnet (MPNet's embeddings take id 1 as padding, where this layout puts
``<pad>``, and it frames sentence pairs as RoBERTa does). Both are wrapped in
``PreTrainedTokenizerFast`` with their special tokens, so the saved tokenizer loads with
``AutoTokenizer.from_pretrained`` and encodes sentence pairs the way the pretrained families do.

Training is deterministic: the same texts give the same vocabulary in every process.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from ..errors import UserError

MAX_LENGTH = 512

# Special tokens in id order: the random model configs take pad_token_id etc. from this order.
WORDPIECE_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                      "sep_token": "[SEP]", "mask_token": "[MASK]"}
BPE_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>",
                "unk_token": "<unk>", "mask_token": "<mask>"}

# Word-internal characters are renamed into Unicode's private-use plane while learning merges.
_CONTINUATION_BASE = 0xF0000


def _learn_wordpiece_vocab(texts: list[str], vocab_size: int, normalizer, pre_tokenizer
                           ) -> dict[str, int]:
    """WordPiece vocabulary learned by BPE merges, like ``WordPieceTrainer`` but deterministic.

    ``WordPieceTrainer`` numbers its ``##x`` pieces in hash-map order, and merge ties are broken
    by those numbers, so two runs on the same texts learn different vocabularies. Here every
    word-internal character is renamed to a character of its own before training a plain BPE
    (whose alphabet is sorted, hence deterministic); its tokens are then renamed back, a token
    that starts inside a word getting the ``##`` prefix.
    """
    words = [[word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
             for text in texts]
    alphabet = sorted({char for sentence in words for word in sentence for char in word})
    inner = {char: chr(_CONTINUATION_BASE + index) for index, char in enumerate(alphabet)}
    outer = {renamed: char for char, renamed in inner.items()}
    renamed_texts = [" ".join(word[0] + "".join(inner[char] for char in word[1:])
                              for word in sentence) for sentence in words]

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = list(WORDPIECE_SPECIALS.values())
    # Every character both at a word start and inside a word, so no seen character is unknown.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(alphabet), special_tokens=specials,
                                  initial_alphabet=alphabet + list(inner.values()),
                                  show_progress=False)
    learner.train_from_iterator(renamed_texts, trainer=trainer)

    vocab: dict[str, int] = {}
    for token, _ in sorted(learner.get_vocab().items(), key=lambda item: item[1]):
        if token in specials:
            piece = token
        elif token[0] in outer:
            piece = "##" + "".join(outer[char] for char in token)
        else:
            piece = token[0] + "".join(outer[char] for char in token[1:])
        vocab.setdefault(piece, len(vocab))
        if len(vocab) >= max(vocab_size, len(specials) + 2 * len(alphabet)):
            break
    return vocab


def _wordpiece(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = _learn_wordpiece_vocab(texts, vocab_size, normalizer, pre_tokenizer)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                           continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=MAX_LENGTH, do_lower_case=True,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"], **WORDPIECE_SPECIALS)


def _byte_level_bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    # Byte-level BPE learns deterministically: its alphabet is the 256 bytes, sorted.
    tokenizer = Tokenizer(models.BPE())  # no unk token: every byte is in the alphabet
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    vocab = tokenizer.get_vocab()
    # RoBERTa's layout: <s> A </s></s> B </s>, every segment id 0.
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
        trim_offsets=True, add_prefix_space=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=MAX_LENGTH, cls_token="<s>",
        sep_token="</s>", model_input_names=["input_ids", "attention_mask"], **BPE_SPECIALS)


def train_tokenizer(family: str, texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train the tokenizer of ``family`` (bert, distilbert, electra, mpnet, roberta) on ``texts``.

    >>> tokenizer = train_tokenizer("bert", ["A biased sentence.", "A neutral one."], 200)
    >>> tokenizer.convert_ids_to_tokens(tokenizer("A biased one.")["input_ids"])
    ['[CLS]', 'a', 'biased', 'one', '.', '[SEP]']
    """
    texts = [text for text in texts if isinstance(text, str) and text.strip()]
    if not texts:
        raise UserError("model.pretrained is false, which trains a tokenizer on the training "
                        "sentences, but no training sentences were given")
    if family in ("roberta", "mpnet"):
        return _byte_level_bpe(texts, vocab_size)
    if family not in ("bert", "distilbert", "electra"):
        raise ValueError(f"no tokenizer recipe for model family {family!r}")
    tokenizer = _wordpiece(texts, vocab_size)
    if family == "distilbert":  # DistilBERT has no segment embeddings
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer
