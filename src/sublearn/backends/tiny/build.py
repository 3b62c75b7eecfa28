"""Build (tokenizer + architecture + pre-training) and cache an embedded base model.

The result is an ordinary transformers checkpoint directory (safetensors weights, fast tokenizer with a
chat template), so everything downstream uses the same code path as a real checkpoint. It is cached by
the hash of its spec under ``$SUBLEARN_CACHE`` (default ``~/.cache/sublearn``): pre-training happens once
per spec per machine, never per run.
"""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from ...store import Store, artifact_key
from .presets import PRESETS, EmbeddedSpec


def cache_root() -> Path:
    return Path(os.environ.get("SUBLEARN_CACHE", Path.home() / ".cache" / "sublearn"))


def make_model(spec: EmbeddedSpec, vocab_size: int, eos_id: int, pad_id: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.init_seed)
    if spec.family == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.d_model, intermediate_size=spec.d_ff,
                          num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads,
                          num_key_value_heads=spec.n_heads, max_position_embeddings=1024, tie_word_embeddings=True,
                          bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id,
                          initializer_range=spec.init_std)
        return LlamaForCausalLM(cfg)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=spec.d_model, n_layer=spec.n_layers, n_head=spec.n_heads,
                     n_inner=spec.d_ff, n_positions=1024, bos_token_id=eos_id, eos_token_id=eos_id,
                     pad_token_id=pad_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     initializer_range=spec.init_std)
    return GPT2LMHeadModel(cfg)


def ensure_embedded(name: str, spec: EmbeddedSpec | None = None) -> tuple[Path, str]:
    """Path of the cached, pre-trained embedded base ``name`` (built now if missing), and its key."""
    spec = spec or PRESETS[name]
    store = Store(cache_root())
    key = embedded_key(name, spec)
    if store.exists("base", key):
        return store.path("base", key), key
    with store.claimed([("base", key)]):  # two runs on one machine pre-train a base once
        if not store.exists("base", key):
            _pretrain(store, name, spec, key)
    return store.path("base", key), key


def _pretrain(store: Store, name: str, spec: EmbeddedSpec, key: str) -> None:
    from ..hf import HFModel, quiet_transformers
    from ..hf_train import Recipe
    from .corpus import VERSION, corpus, key_parts, vocabulary_texts
    from .tokenizer import train_tokenizer

    logger.info(f"pre-training embedded base '{name}' ({spec.family}, d={spec.d_model}, {spec.n_layers} layers, "
                f"{spec.steps} steps); cached under {store.root}")
    quiet_transformers()
    with store.writing("base", key, name=name, config={"name": name, "spec": spec.dump(), "corpus_version": VERSION,
                                                         **key_parts(spec.mix)}, seed=spec.init_seed,
                       model=name) as (tmp, extra):
        tok = train_tokenizer(vocabulary_texts(spec.corpus_seed, spec.mix), spec.tokenizer)
        model = make_model(spec, len(tok), tok.eos_token_id, tok.pad_token_id)
        chats = corpus(spec.steps * spec.batch_size, spec.corpus_seed, spec.mix)
        recipe = Recipe(target="tokens", adapter="full", epochs=1, batch_size=spec.batch_size, lr=spec.lr,
                        schedule="cosine", warmup_steps=min(50, spec.steps // 10), seed=spec.init_seed,
                        weight_decay=0.01, completion_only=not spec.train_on_prompts)
        trained = HFModel(model, tok, name).train([{"messages": c} for c in chats], recipe, desc=f"pre-train {name}")
        trained.meta = {"embedded": name, "spec": spec.dump(), "loss_first_last": trained.meta["train_losses_first_last"]}
        trained.save(tmp)
        extra.update(vocab=len(tok), params=sum(p.numel() for p in model.parameters()))


def embedded_key(name: str, spec: EmbeddedSpec | None = None) -> str:
    """The cache key of an embedded base, without building it."""
    from .corpus import VERSION, key_parts

    spec = spec or PRESETS[name]
    return artifact_key("base", {"name": name, "spec": spec.dump(), "corpus_version": VERSION, **key_parts(spec.mix)})
