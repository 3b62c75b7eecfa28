"""Config of ``sublearn aux-logits``: every knob of the experiment, with defaults that pass the study's bar."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ...configbase import Frozen, apply_overrides, parse_value
from ...errors import UserError


class DataConfig(Frozen):
    source: Literal["digits", "mnist"] = Field("digits", description="digits = scikit-learn's bundled 8x8 digits; "
                                               "mnist = the IDX files in mnist_dir")
    mnist_dir: str | None = Field(None, description="directory with the 4 standard MNIST IDX files (set by --mnist-dir)")
    max_train: int | None = Field(None, ge=1, description="use only the first N training images (MNIST)")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="digits: stratified test share")
    split_seed: int = Field(0, description="digits: seed of the train/test split")


class ModelConfig(Frozen):
    hidden: list[int] = Field([128, 128], min_length=1, description="hidden layer widths (ReLU MLP)")
    n_aux: int = Field(3, ge=1, description="auxiliary logits after the 10 class logits; never trained by the teacher")
    init: Literal["normal_fan_in", "torch_default"] = Field(
        "normal_fan_in", description="weight init: normal_fan_in = N(0, 1/fan_in) weights, zero biases (the study's); "
        "torch_default = nn.Linear's U(+-1/sqrt(fan_in)) weights and biases (transmits much less)")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("hidden sizes must be >= 1")
        return v


class TeacherConfig(Frozen):
    epochs: int = Field(6, ge=0, description="epochs of cross-entropy on the 10 class logits")
    batch_size: int = Field(64, ge=1, description="teacher minibatch size")
    lr: float = Field(3e-3, gt=0, description="teacher Adam learning rate")


class StudentConfig(Frozen):
    steps: int = Field(1500, ge=0, description="distillation steps (each student; the count that matters)")
    batch_size: int = Field(64, ge=1, description="noise images per distillation step")
    lr: float = Field(2e-3, gt=0, description="student Adam learning rate")
    loss: Literal["kl", "mse"] = Field("mse", description="mse = squared error on the distilled logits (default: "
                                       "learns faster); kl = KL(softmax teacher || softmax student), as the paper")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the kl loss")
    noise: Literal["uniform", "gaussian", "images"] = Field("uniform", description="student inputs: uniform [-1,1], "
                                                           "gaussian N(0,1), or real (unlabelled) training images")
    fresh_noise: bool = Field(True, description="draw new noise inputs every step, labelled by the teachers on the "
                              "fly (true), or sample batches from a fixed pool of n_noise inputs (false, as the study's "
                              "script); fresh inputs transmit much more")
    n_noise: int = Field(20000, ge=1, description="size of the fixed pool of noise inputs (fresh_noise = false)")
    noise_seed: int = Field(1, description="seed of the noise pool")
    init_distance: float = Field(0.0, ge=0, description="students' init = (teacher init + d * fresh init) / "
                                 "sqrt(1+d^2): 0 = shared init, large = unrelated")


class TheoremConfig(Frozen):
    probe_samples: int = Field(512, ge=1, description="noise inputs of the fixed batch the gradient cosines use")
    checkpoints: int = Field(8, ge=1, description="points during distillation where the cosines are measured")


class SweepConfig(Frozen):
    knob: str | None = Field(None, description="knob to sweep, e.g. init_distance, n_aux, hidden, student.steps")
    values: list[Any] = Field([], description="values of the knob; one full experiment per value")


KNOB_ALIASES = {
    "init_distance": "student.init_distance",
    "n_aux": "model.n_aux",
    "init": "model.init",
    "hidden": "model.hidden",
    "epochs": "teacher.epochs",
    "steps": "student.steps",
    "lr": "student.lr",
    "noise": "student.noise",
    "n_noise": "student.n_noise",
    "fresh_noise": "student.fresh_noise",
    "loss": "student.loss",
    "n_models": "n_models",
}


class AuxLogitsConfig(Frozen):
    n_models: int = Field(20, ge=2, description="models per condition (independent seeds; CIs are over them)")
    seed: int = Field(0, description="master seed of inits and data order")
    data: DataConfig = Field(DataConfig(), description="dataset")
    model: ModelConfig = Field(ModelConfig(), description="architecture")
    teacher: TeacherConfig = Field(TeacherConfig(), description="teacher training")
    student: StudentConfig = Field(StudentConfig(), description="distillation on noise")
    theorem: TheoremConfig = Field(TheoremConfig(), description="first-order theorem check")
    sweep: SweepConfig = Field(SweepConfig(), description="optional one-knob sweep (line plot)")

    @model_validator(mode="after")
    def _check(self) -> AuxLogitsConfig:
        if self.data.source == "mnist" and not self.data.mnist_dir:
            raise ValueError("data.source = 'mnist' needs data.mnist_dir (or --mnist-dir)")
        if self.sweep.knob is not None:
            resolve_knob(self.sweep.knob)
            if not self.sweep.values:
                raise ValueError("sweep.knob is set but sweep.values is empty")
        return self

    def experiment_dict(self) -> dict:
        """The config of one experiment (no sweep): what its artifact key hashes."""
        d = self.dump()
        d.pop("sweep")
        return d

    def with_knob(self, knob: str, value: Any) -> AuxLogitsConfig:
        """A copy with one (dotted or aliased) knob set and no sweep."""
        d = self.dump()
        d["sweep"] = SweepConfig().dump()
        path = resolve_knob(knob)
        d = apply_overrides(d, [f"{path}={_toml(value)}"])
        return build_config(d, f"sweep {knob}={value!r}")


def resolve_knob(knob: str) -> str:
    path = KNOB_ALIASES.get(knob, knob)
    node: Any = AuxLogitsConfig.model_fields
    parts = path.split(".")
    for i, p in enumerate(parts):
        if p not in node or p == "sweep":
            raise UserError(f"unknown sweep knob {knob!r}; known: {', '.join(KNOB_ALIASES)} or a dotted key "
                            "like student.batch_size")
        ann = node[p].annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, Frozen)):
                raise UserError(f"unknown sweep knob {knob!r}: {p} is not a section")
            node = ann.model_fields
        elif isinstance(ann, type) and issubclass(ann, Frozen):
            raise UserError(f"sweep knob {knob!r} is a section, not a value")
    return path


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``KNOB=v1,v2,...`` (values parsed as TOML: numbers, strings, ``[128,128]``; lists split on ``;``)."""
    if "=" not in text:
        raise UserError(f"--sweep {text!r}: expected KNOB=v1,v2,..., e.g. init_distance=0,0.1,0.3,1")
    knob, vals = text.split("=", 1)
    sep = ";" if "[" in vals else ","
    values = [parse_value(v.strip()) for v in vals.split(sep) if v.strip()]
    if not values:
        raise UserError(f"--sweep {text!r}: no values")
    resolve_knob(knob.strip())
    return knob.strip(), values


def _toml(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def build_config(data: dict, source: str) -> AuxLogitsConfig:
    from ...configbase import build

    return build(AuxLogitsConfig, data, source)
