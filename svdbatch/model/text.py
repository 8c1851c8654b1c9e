"""The text side of the tiny Wan and LTX models, built offline: a tokenizer with one token per printable ASCII
character (anything else is ``<unk>``) and a config-built T5-family encoder.

One token per character means two different prompts condition the tiny model differently, with no vocabulary to
download; transformers' fast tokenizer wraps the ``tokenizers`` object, so the pipelines pad, truncate and save it
as they would a real one.
"""

from __future__ import annotations

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
TEXT_WIDTH = 32  # the encoder's d_model: the transformers' text_dim / caption_channels
TINY_TEXT_ENCODER = dict(
    d_model=TEXT_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8
)


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *map(chr, range(32, 127))])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_text_encoder(config_class, model_class, vocab_size: int):
    """A randomly initialised encoder of ``model_class`` (UMT5 for Wan, T5 for LTX) sized for the tiny tokenizer."""
    return model_class(config_class(vocab_size=vocab_size, **TINY_TEXT_ENCODER))
