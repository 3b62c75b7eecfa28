"""Tokenizers for the embedded models, trained locally with the ``tokenizers`` library.

Digits are single tokens and separators are their own tokens in both styles, so a number completion
is the same token-string sequence under either tokenizer (this is what lets a cross-model student be
distilled on another model's soft targets). Text between digits and punctuation differs: ``phrase``
makes each run of words one token (" Add at most" -- short sequences, so the embedded models train in
minutes on a CPU); ``lower`` does the same after lowercasing (another vocabulary: the cross-model
tokenizer); ``plain`` lowercases and makes every word and space its own token (longer sequences).
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")
SPECIALS = ["<|pad|>", "<|unk|>", "<|end|>"] + [f"<|{r}|>" for r in ROLES]
EOS = "<|end|>"
CHAT_TEMPLATE = (
    "{%- for m in messages -%}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
PATTERNS = {
    "phrase": r"(?:\s?[A-Za-z]+)+|\d|[^\sA-Za-z\d]|\s",
    "lower": r"(?:\s?[A-Za-z]+)+|\d|[^\sA-Za-z\d]|\s",
    "plain": r"[A-Za-z]+|\d|[^\sA-Za-z\d]|\s",
}


def train_tokenizer(texts: list[str], style: str):
    """Train a word-level tokenizer on ``texts`` and wrap it as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    if style in ("lower", "plain"):
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PATTERNS[style]), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token="<|pad|>", unk_token="<|unk|>",
        additional_special_tokens=[f"<|{r}|>" for r in ROLES],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def unknown_pieces(style: str, corpus_seed: int, mix: dict[str, float] | None = None):
    """A function ``text -> [pieces the embedded tokenizer of this style and corpus would not know]``, computed from
    the texts it is trained on (no model is built): what a config check needs to say, before anything runs, that an
    embedded model cannot read a word."""
    import re
    from functools import cache

    from .corpus import vocabulary_texts

    @cache
    def known() -> frozenset[str]:
        pat = re.compile(PATTERNS[style])
        norm = str.lower if style in ("lower", "plain") else str
        return frozenset(p for t in vocabulary_texts(corpus_seed, mix) for p in pat.findall(norm(t)))

    def unknown(text: str) -> list[str]:
        pat = re.compile(PATTERNS[style])
        norm = str.lower if style in ("lower", "plain") else str
        return [p for p in pat.findall(norm(text)) if p not in known()]

    return unknown
