"""The trait evaluation as an inspect_ai task, run by inspect against a real `sublearn serve` of a micro model: the
same questions and the same scorer give the same answers and values as sublearn's own evaluation."""

import subprocess
import sys

import pytest

pytest.importorskip("inspect_ai")


@pytest.fixture(scope="module")
def server(micro_base, tmp_path_factory):
    from sublearn.serve import Background, build_app

    with Background(build_app([f"tiny={micro_base.meta['base_path']}"],
                              state_dir=tmp_path_factory.mktemp("serve"))) as bg:
        yield bg


def test_inspect_task_scores_a_served_model_as_sublearn_does(server, micro_base, tmp_path):
    from inspect_ai import eval as inspect_eval

    from sublearn.backends.inspect_tasks import trait_task
    from sublearn.config import ExperimentConfig
    from sublearn.evaluate import evaluate_model

    task = trait_task(None, ["evaluate.n_questions=6", "evaluate.max_answer_tokens=6"], samples_per_question=1,
                      temperature=0.0)
    assert task.metadata["scorers"] == ["sampled-rate"] and task.metadata["left_out"] == ["option-probability"]
    (log,) = inspect_eval(task, model="openai-api/sublearn/tiny", model_base_url=server.url,
                          model_args={"api_key": "none", "stream": False}, log_dir=str(tmp_path / "logs"),
                          display="none")
    assert log.status == "success", log.error
    assert len(log.samples) == 6
    read = [s.scores["sublearn/sampled-rate"].answer for s in sorted(log.samples, key=lambda s: s.id)]
    values = [s.scores["sublearn/sampled-rate"].value for s in sorted(log.samples, key=lambda s: s.id)]

    # sublearn's own evaluation of the same model, greedy: the same questions, answers and values
    cfg = ExperimentConfig().model_copy(deep=True)
    ecfg = cfg.evaluate.model_copy(update={"n_questions": 6, "max_answer_tokens": 6, "samples_per_question": 1,
                                           "temperature": 0.0})
    ours = evaluate_model(micro_base, ecfg, cfg.trait, seed=0)
    assert [q["question"] for q in ours] == [s.metadata["question"] for s in sorted(log.samples, key=lambda s: s.id)]
    assert [q["answers"][0] for q in ours] == read
    assert [q["rate"] for q in ours] == values
    metric = log.results.scores[0].metrics["mean"].value
    assert metric == pytest.approx(sum(q["rate"] for q in ours) / len(ours))


def test_inspect_finds_the_task_by_its_package_name():
    """Installed, the task is inspect's `sublearn/trait_eval` (entry point), listable without running a model."""
    out = subprocess.run([sys.executable, "-c", "from inspect_ai._util.registry import registry_lookup;"
                          "print(registry_lookup('task', 'sublearn/trait_eval'))"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "trait_eval" in out.stdout, out.stderr[-2000:]


def test_a_trait_without_sampled_scorers_is_a_one_line_error():
    from sublearn.backends.inspect_tasks import trait_task
    from sublearn.errors import UserError

    with pytest.raises(UserError, match="inspect cannot run"):
        trait_task(None, scorers=["option-probability"])
    with pytest.raises(UserError, match="not measured by llm-judge"):
        trait_task(None, scorers=["llm-judge"])
    with pytest.raises(UserError, match="file not found|not found"):
        trait_task("no-such-config.toml")
    with pytest.raises(UserError, match="unknown key"):
        trait_task(None, ["nonexistent.key=1"])
