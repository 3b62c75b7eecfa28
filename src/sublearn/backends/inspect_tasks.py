"""A config's trait evaluation as an ``inspect_ai`` task: the same questions, and the same sampled scorers, for any
model inspect can reach (``pip install 'sublearn[inspect]'``; docs/inspect.md).

    inspect eval sublearn/trait_eval -T config=examples/owl-tiny.toml \\
        --model openai-api/sublearn/tiny --model-base-url http://127.0.0.1:8000/v1 -M api_key=none

Each of the trait's questions (``evaluate.n_questions``, after ``evaluate.question_prefix``) is one sample, asked
``evaluate.samples_per_question`` times (inspect's epochs, reduced by the mean) at ``evaluate.temperature`` with
``evaluate.max_answer_tokens``. Every answer is read by the sublearn scorer's own ``judge`` (the trait's answer
normalization, or the closed world's rule-based judge), so a question's value is the scorer's per-question value
and the task's mean is the evaluation's. Scorers that need exact answer probabilities (``option-probability``,
``harmful-probability``) cannot run through inspect's model API, which returns sampled text; they are left out and
named in the task's metadata. Installed, the module is inspect's ``sublearn`` package (entry point ``inspect_ai``).
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig
from inspect_ai.scorer import Score, Target, mean, scorer, stderr
from inspect_ai.solver import TaskState, generate

__all__ = ["trait_eval", "trait_task"]


def trait_task(config: str | None = None, overrides: list[str] | tuple[str, ...] = (), *, scorers: list[str] | None
               = None, samples_per_question: int | None = None, temperature: float | None = None,
               system_prompt: bool = False) -> Task:
    """The inspect Task of a config's trait evaluation (defaults: the config's ``[evaluate]`` section).

    ``config``: a TOML file or run directory (None: sublearn's default experiment); ``overrides``: ``--set``
    strings; ``scorers``: a subset of the trait's sampled scorers; ``system_prompt``: ask with the trait's system
    prompt (how the system-prompt teacher is evaluated)."""
    from ..config import load_experiment
    from ..errors import UserError
    from ..plugins import SCORERS

    cfg = load_experiment(config or None, list(overrides))
    tr, ecfg = cfg.trait, cfg.evaluate
    names = list(scorers or tr.scorers())
    unknown = [n for n in names if n not in tr.scorers()]
    if unknown:
        raise UserError(f"the trait {tr.label()} is not measured by {', '.join(unknown)}; its scorers: "
                        f"{', '.join(tr.scorers())}")
    sampled = [n for n in names if SCORERS.get(n)().judges_answers]
    if not sampled:
        raise UserError(f"none of {', '.join(names)} reads sampled answers (exact probabilities need sublearn's own "
                        "backends), so inspect cannot run them")
    head = [ChatMessageSystem(content=tr.system_prompt())] if system_prompt else []
    samples = [Sample(id=i + 1, input=head + [ChatMessageUser(content=ecfg.question_prefix + q)],
                      target=tr.label(), metadata={"question": q})
               for i, q in enumerate(tr.eval_questions()[: ecfg.n_questions])]
    n = samples_per_question or ecfg.samples_per_question
    return Task(
        dataset=MemoryDataset(samples, name=f"sublearn-{tr.label()}"),
        solver=generate(),
        scorer=[_scorer(tr, name) for name in sampled],
        epochs=Epochs(n, "mean"),
        config=GenerateConfig(temperature=ecfg.temperature if temperature is None else temperature,
                              max_tokens=ecfg.max_answer_tokens),
        metadata={"sublearn_trait": tr.key_dump(), "scorers": sampled,
                  "left_out": [x for x in names if x not in sampled]},
        name=f"sublearn_{tr.label().replace(' ', '_')}",
    )


def _scorer(trait, name: str):
    """The registered sublearn scorer ``name`` as an inspect scorer: one answer's value by its ``judge``."""
    from ..plugins import SCORERS

    ours = SCORERS.get(name)()

    @scorer(metrics=[mean(), stderr()], name=f"sublearn/{name}")
    def make():
        async def score(state: TaskState, target: Target) -> Score:
            value, read = ours.judge(trait, state.output.completion)
            return Score(value=value, answer=read, explanation=f"{ours.label}: read {read!r}")

        return score

    return make()


@task
def trait_eval(config: str = "", set: list[str] | str = "", scorer: str = "", samples_per_question: int = 0,
               temperature: float = -1.0, system_prompt: bool = False) -> Task:
    """A sublearn config's trait evaluation (``-T config=FILE -T set=trait.target=eagle -T temperature=0``)."""
    overrides = [set] if isinstance(set, str) and set else list(set or [])
    return trait_task(config or None, overrides, scorers=[s for s in scorer.split(",") if s] or None,
                      samples_per_question=samples_per_question or None,
                      temperature=None if temperature < 0 else temperature, system_prompt=system_prompt)
