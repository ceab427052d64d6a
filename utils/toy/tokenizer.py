"""The word-level tokenizer of the toy language.

One token per whitespace-separated word; unknown words map to ``<unk>``; a post-processor
prepends ``<bos>`` exactly once, so TransformerLens never adds a second one. It is saved
with ``save_pretrained`` and always loaded from that folder (never from the hub): the
loaded tokenizer's ``name_or_path`` points at the folder and ``add_bos_token=True``, which
is what ``HookedTransformer.set_tokenizer`` needs to re-load it without a network call.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from utils.toy.generator import BOS, PAD, UNK, vocabulary


def build_tokenizer(folder: str | Path, words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Build the tokenizer for ``words`` (default ``vocabulary()``; specials first), save it
    to ``folder`` and load it back."""
    words = words or vocabulary()
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, words.index(BOS))])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    wrapped = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=BOS,
                                      pad_token=PAD, unk_token=UNK)
    wrapped.save_pretrained(str(folder))
    return load_tokenizer(folder)


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Load the saved tokenizer from ``folder`` with ``add_bos_token=True``."""
    return PreTrainedTokenizerFast.from_pretrained(str(folder), add_bos_token=True,
                                                   local_files_only=True)
