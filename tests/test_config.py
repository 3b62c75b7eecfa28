import pytest

from sublearn.cli import main
from sublearn.config import ExperimentConfig, load_experiment
from sublearn.configtoml import to_toml
from sublearn.errors import UserError


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_example_config_loads():
    cfg = load_experiment("examples/owl-tiny.toml")
    assert cfg.trait.target == "owl" and len(cfg.seeds) == 8
    assert set(cfg.students.conditions) == {"same-init", "control", "other-trait", "cross-model",
                                            "cross-model-control", "in-context", "in-context-control"}
    assert cfg == ExperimentConfig().model_copy(update={"name": "owl-tiny"})  # the defaults are the demo


def test_partial_section_keeps_other_defaults(tmp_path):
    cfg = load_experiment(write(tmp_path, "[teacher.recipe]\nlr = 0.5\n"))
    assert cfg.teacher.recipe.lr == 0.5
    assert cfg.teacher.recipe.target == ExperimentConfig().teacher.recipe.target == "tokens"


def test_naming_epochs_drops_the_default_steps(tmp_path):
    # the default student recipe trains for a number of steps; a section that asks for epochs gets epochs
    assert ExperimentConfig().students.recipe.steps is not None
    cfg = load_experiment(write(tmp_path, "[students.recipe]\nepochs = 3\n"))
    assert cfg.students.recipe.steps is None and cfg.students.recipe.epochs == 3
    assert load_experiment(None, ["students.recipe.epochs=2"]).students.recipe.steps is None
    both = load_experiment(write(tmp_path, "[students.recipe]\nepochs = 3\nsteps = 7\n"))
    assert both.students.recipe.steps == 7
    assert load_experiment("examples/paper-qwen7b.toml").students.recipe.steps is None


def test_set_overrides_and_target_change(tmp_path):
    cfg = load_experiment(write(tmp_path, ""), ["trait.target=eagle", "seeds=[4, 5]", "evaluate.n_questions=5"])
    assert cfg.trait.target == "eagle" and cfg.seeds == (4, 5) and cfg.evaluate.n_questions == 5
    cfg = load_experiment(None, ["trait.category=tree", "trait.target=oak"])
    assert cfg.trait.other_target() == "pine"


@pytest.mark.parametrize("text,needle", [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[trait]\ncolour = 'red'\n", "unknown key 'trait.colour'"),
    ("seeds = 'zero'\n", "'seeds'"),
    ("[trait]\ntarget = 'unicorn'\n", "not an option"),
    ("[students]\nconditions = ['same-init', 'telepathy']\n", "unknown condition"),
    ("[filter]\nbanned = ['nope']\n", "unknown ban list"),
    ("[model.embedded.huge]\nsteps = 3\n", "unknown embedded model"),
    ("[model.embedded.tiny]\nwidth = 3\n", "width"),
    ("this is not toml = = \n", "invalid TOML"),
    ("[students.recipe]\nlora_layers = [99]\n", "lora_layers [99] out of range for a 2-layer model"),
    ("[teacher.recipe]\nlora_layers = [-3]\n", "teacher.recipe on 'tiny': lora_layers [-3] out of range"),
    ("[students.recipe]\nlora_targets = ['nonexistent']\n", "are not modules of the llama family"),
    ("[students.recipe]\nlora_targets = []\n", "lora_targets is empty"),
    ("[students.recipe]\nlr = inf\n", "lr"),
    ("[students.recipe]\nlr = nan\n", "lr"),
    ("[students.recipe]\nfreeze_a = 'maybe'\n", "freeze_a"),
])
def test_bad_config_is_user_error(tmp_path, text, needle):
    with pytest.raises(UserError) as e:
        load_experiment(write(tmp_path, text))
    assert needle in str(e.value)


def test_cli_bad_config_exit_2_one_line(tmp_path, capsys):
    p = write(tmp_path, "bogus = 1\n")
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'bogus'" in err and "\n" not in err
    assert main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["run", str(write(tmp_path, "")), "--out", str(tmp_path / "o"), "--set", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_default_config_renders_as_loadable_toml(tmp_path):
    text = to_toml(ExperimentConfig())
    assert "# " in text
    cfg = load_experiment(write(tmp_path, text))
    assert cfg == ExperimentConfig()


def test_config_hash_changes_with_content():
    a, b = ExperimentConfig(), load_experiment(None, ["trait.target=cat"])
    assert a.hash() == ExperimentConfig().hash() and a.hash() != b.hash()


@pytest.mark.parametrize("argv,needle", [
    (["run", "examples/owl-tiny.toml", "--out", "x", "--force", "everything"], "invalid choice"),
    (["run", "examples/owl-tiny.toml"], "--out"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_usage_errors_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and "\n" not in err


def test_unknown_model_path_is_user_error(tmp_path, capsys):
    p = write(tmp_path, "")
    assert main(["run", str(p), "--out", str(tmp_path / "o"), "--set", "model.base=/no/such/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model" in err and "\n" not in err
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    (tmp_path / "empty").mkdir()
    for base, needle in ((tmp_path / "weights.bin", "not a .gguf model"), (tmp_path / "empty", "not a model directory")):
        assert main(["run", str(p), "--out", str(tmp_path / "o"), "--set", f"model.base={base}"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()  # refused before the run directory was made


@pytest.mark.parametrize("name", ["owl-tiny", "owl-smollm2", "paper-qwen7b"])
def test_example_configs_load(name):
    cfg = load_experiment(f"examples/{name}.toml")
    assert cfg.name and cfg.students.conditions


def test_older_configs_load_with_their_number_settings_moved_to_the_carrier():
    cfg = load_experiment(None, ["generate.sampling.format=free", "filter.max_count=12", "teacher.preference_rows=9"])
    assert cfg.generate.format == "free" and cfg.carrier.max_count == 12 and cfg.teacher.trait_rows == 9


def test_vllm_engine_is_sized_for_the_largest_lora_rank_trained():
    from sublearn.backends.vllm import lora_slot

    cfg = load_experiment(None, ["model.backend=vllm", "students.recipe.lora_rank=100", "teacher.recipe.lora_rank=4"])
    assert cfg.max_lora_rank() == 100 and lora_slot(cfg.max_lora_rank()) == 128
    assert load_experiment(None, ["teacher.mode=system_prompt", "teacher.recipe.lora_rank=300"]).max_lora_rank() == 4
    assert [lora_slot(r) for r in (1, 2, 8, 9, 300, 512)] == [1, 8, 8, 16, 320, 512]
    with pytest.raises(UserError, match="up to rank 512"):
        load_experiment(None, ["model.backend=vllm", "students.recipe.lora_rank=600"])
    assert load_experiment(None, ["students.recipe.lora_rank=600"]).max_lora_rank() == 600  # the hf backend: any rank


def test_constrained_decoding_needs_a_backend_with_logits():
    with pytest.raises(UserError, match="needs the model's logits"):
        load_experiment(None, ["model.backend=openai", "students.recipe.target=tokens", "teacher.mode=system_prompt",
                               "generate.format=constrained"])
    for backend in ("hf", "vllm"):
        cfg = load_experiment(None, [f"model.backend={backend}"])
        assert cfg.generate.format == "constrained"  # auto, resolved


@pytest.mark.parametrize("override,needle", [
    ('evaluate.answer_forms=["{x}"]', "use only {o} and {O}"),
    ('evaluate.answer_forms=["the bird"]', "must contain {o} or {O}"),
    ("generate.format=words", "generate.format"),
    ("students.recipe.grad_accum=0", "grad_accum"),
    ("students.recipe.max_length=2", "max_length"),
    ("model.backend=tpu", "model.backend"),
    ("model.vllm_gpu_memory=1.5", "vllm_gpu_memory"),
    ("model.embedded.tiny.init_std=0", "init_std"),
    ("model.embedded.tiny.init_std=big", "init_std"),
    ("model.embedded.tiny.train_on_prompts=maybe", "train_on_prompts"),
    ('students.conditions=["same-init","cross-control"]', "unknown condition 'cross-control'"),
    ("students.recipe.lr=inf", "finite number"),  # was accepted, written to config.json as null, then crashed
    ("generate.sampling.temperature=nan", "finite number"),
    ("teacher.recipe.weight_decay=-inf", "finite number"),
    ("seeds=[9223372036854775808]", "seeds must be 0..4294967295"),  # was a traceback in a worker
    ("seeds=[3, 3]", "seeds repeat"),
    ("generate.sampling.seed=-1", "generate.sampling.seed"),
    ("students.recipe.seed=4294967296", "students.recipe.seed"),
    ("model.embedded.tiny.d_model=66", "must be a multiple of n_heads"),  # was a traceback in pre-training
    ("model.embedded.tiny.mix.numbers=-1", "corpus mixture weights"),
    ("model.embedded.tiny.mix.jokes=1", "unknown corpus part 'jokes'"),
    ("students.recipe.gradient_checkpointing=maybe", "gradient_checkpointing"),
])
def test_new_config_fields_reject_garbage_in_one_line(tmp_path, capsys, override, needle):
    p = write(tmp_path, "")
    assert main(["run", str(p), "--out", str(tmp_path / "o"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_bad_run_directory_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    p = write(tmp_path, "")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [("", "--out is empty"), (str(afile), "is a file, not a directory"),
             (str(afile / "sub"), "cannot create it"), ("/", "filesystem root"),
             (str(tmp_path / ("a" * 300)), "cannot create it")]
    for out, needle in cases:
        assert main(["run", str(p), "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, (out, err)
    monkeypatch.setenv("SUBLEARN_CACHE", str(afile))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "SUBLEARN_CACHE" in err and "is a file" in err and "\n" not in err
    assert not (tmp_path / "o").exists()
    assert main(["aux-logits", "--out", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_config_command_prints_the_resolved_config(tmp_path, capsys):
    import tomllib

    from sublearn import __version__

    assert main(["config", "examples/owl-tiny.toml", "--set", "trait.target=fox", "--set", "seeds=[4, 5]"]) == 0
    printed = capsys.readouterr().out
    resolved = tomllib.loads(printed)
    assert resolved["trait"]["target"] == "fox" and resolved["seeds"] == [4, 5] and resolved["name"] == "owl-tiny"
    (tmp_path / "c.toml").write_text(printed)  # what it prints loads back as the same config
    assert load_experiment(tmp_path / "c.toml", []) == load_experiment("examples/owl-tiny.toml",
                                                                         ["trait.target=fox", "seeds=[4, 5]"])
    assert main(["config", "--set", "trait.target=zebra"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not an option" in err and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sublearn {__version__}"


def test_serve_without_the_api_extra_is_one_line(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the extra were not installed: importing it fails
    assert main(["serve", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs the 'api' extra (fastapi is missing)" in err and "\n" not in err
