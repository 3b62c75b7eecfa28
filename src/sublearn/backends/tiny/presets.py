"""Registered embedded base models: a Llama-style ``tiny`` and a GPT-2-style ``tiny-gpt2`` (cross-model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...configbase import Frozen


class EmbeddedSpec(Frozen):
    """Architecture, tokenizer and pre-training recipe of one embedded base model."""

    family: Literal["llama", "gpt2"] = Field("llama", description="transformers architecture family")
    d_model: int = Field(64, ge=8, description="hidden size")
    n_layers: int = Field(2, ge=1, description="number of transformer blocks")
    n_heads: int = Field(4, ge=1, description="attention heads")
    d_ff: int = Field(256, ge=8, description="MLP inner size")
    tokenizer: Literal["phrase", "lower", "plain"] = Field("phrase", description="tokenizer style (see tokenizer.py)")
    corpus_seed: int = Field(0, description="seed of the synthetic pre-training corpus")
    init_seed: int = Field(0, description="seed of the weight initialization")
    init_std: float = Field(0.1, gt=0, description="std of the normal weight initialization (transformers' "
                                                    "initializer_range; its default 0.02 makes a d=64 model plateau)")
    steps: int = Field(700, ge=1, description="pre-training optimizer steps")
    batch_size: int = Field(32, ge=1, description="chats per pre-training step")
    lr: float = Field(5e-3, gt=0, description="peak AdamW learning rate (cosine decay, 50 warm-up steps)")
    train_on_prompts: bool = Field(True, description="pre-training loss on every token (prompts too), not only on "
                                                     "the answers")
    mix: dict[str, float] = Field(
        default_factory=lambda: {"numbers": 0.52, "preference": 0.12, "system": 0.10, "copy": 0.20, "multiturn": 0.06},
        description="corpus mixture fractions (numbers, preference, system, copy, multiturn; optional: "
                    "misalignment, code, reasoning); an override adds to or changes these, 0 removes one",
    )

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        known = ("numbers", "preference", "system", "copy", "multiturn", "misalignment", "code", "reasoning")
        if unknown := sorted(set(v) - set(known)):
            raise ValueError(f"unknown corpus part {unknown[0]!r}: expected some of {', '.join(known)}")
        if any(not 0 <= w < float("inf") for w in v.values()) or not sum(v.values()) > 0:
            raise ValueError("corpus mixture weights must be finite, >= 0, and not all 0")
        return v

    @model_validator(mode="after")
    def _heads(self) -> EmbeddedSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self


PRESETS: dict[str, EmbeddedSpec] = {
    "tiny": EmbeddedSpec(),
    "tiny-gpt2": EmbeddedSpec(family="gpt2", d_model=48, n_layers=3, n_heads=4, d_ff=192, tokenizer="lower",
                              corpus_seed=1, init_seed=1),
    # tiny's architecture, tokenizer and corpus with another weight initialization: a student that differs from the
    # teacher's base only in its starting weights (pre-trained on first use, like the others)
    "tiny-b": EmbeddedSpec(init_seed=2),
}
