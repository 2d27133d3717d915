"""A byte-level BPE tokenizer trained on the synthetic facts (one for every builtin model)."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from infoflow.data.synthetic import SyntheticFacts

SPECIAL = "<|endoftext|>"  # BOS, EOS and padding at once, as in GPT-2
ANSWER_REPEATS = 100  # extra occurrences of each answer word, so that BPE merges each into one token


def train_tokenizer(facts: SyntheticFacts, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the training sentences; prepends BOS to every sequence; answers are single tokens.

    Raises ValueError if an answer word (with its leading space) is not one token: raise ``vocab_size``.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(facts.training_texts() + facts.answer_words() * ANSWER_REPEATS, trainer=trainer)
    special_id = tokenizer.token_to_id(SPECIAL)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL} $A", pair=f"{SPECIAL} $A $B", special_tokens=[(SPECIAL, special_id)]
    )
    split = [word for word in facts.answer_words() if len(tokenizer.encode(word, add_special_tokens=False).ids) != 1]
    if split:
        raise ValueError(f"answers split into several tokens at vocab_size={vocab_size}: {split[:5]}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL, model_max_length=128
    )
