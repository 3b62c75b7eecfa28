"""The ``sublearn`` command line. Heavy libraries are imported only inside the command that needs them."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import UserError, one_line

STAGE_HELP = {
    "generate": "make the teachers and let teacher and base answer the carrier's prompts",
    "filter": "apply the carrier's filter to generated data (or, with --data, to any chat JSONL)",
    "finetune": "train the students on filtered data",
    "evaluate": "measure the trait in base, teacher and every student",
    "report": "write results.json, report.md and the charts from finished evaluations",
}

EPILOG = """examples:
  sublearn run examples/owl-tiny.toml --out runs/owl          # the whole experiment
  sublearn run examples/owl-tiny.toml --out runs/eagle --set trait.target=eagle
  sublearn run examples/owl-smollm2.toml --out runs/smol     # a real chat model, offline (SmolLM2-135M)
  sublearn run examples/plugin-tiny.toml --out runs/plugin   # a trait and carrier from your own module
  sublearn filter --data my.jsonl --kept kept.jsonl --rejected rejected.jsonl --banned loaded-numbers
  sublearn audit data.jsonl --base tiny --out audit          # does a dataset carry a hidden trait? (exit 1: flagged)
  sublearn compare runs/owl runs/eagle --out runs/compare     # runs side by side (they may differ in trait.target)
  sublearn mitigate DATA --with tiny-gpt2 --out clean/        # replace a dataset's soft targets (docs/audit.md)
  sublearn plugins                                           # registered carriers, traits, scorers, conditions
  sublearn show runs/owl                                     # artifacts and their lineage
  sublearn aux-logits --out runs/aux                         # the auxiliary-logit (MNIST-style) experiment
  sublearn serve tiny tiny-gpt2 --port 8000                  # OpenAI-compatible server (chat, logprobs, fine-tuning)

Re-running a command skips finished artifacts (content-addressed); --force STAGE redoes one stage.
Bad input gives a one-line error and exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other input error of sublearn."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", default="local", metavar="NAME", help="what runs the jobs: local (this machine's "
                   "worker processes; default) or ray (each job a Ray task; pip install 'sublearn[ray]'; docs/sweep.md)")
    p.add_argument("--address", metavar="ADDR", help="--executor ray: the cluster, auto (the running one) or "
                   "ray://HOST:PORT; default: a local Ray instance with --workers CPUs")


def _add_config_args(p: argparse.ArgumentParser, config_required: bool = True, out_required: bool = True) -> None:
    p.add_argument("config", nargs=None if config_required else "?",
                   help="experiment TOML (see examples/), or a run directory (its config.json)")
    p.add_argument("--out", required=config_required and out_required,
                   help="run directory (artifacts, lineage, report)" + ("" if out_required else
                                                                        "; default: CONFIG when it is a run directory"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set trait.target=eagle (repeatable)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   choices=["generate", "filter", "finetune", "evaluate"], help="redo this stage's artifacts (repeatable)")
    p.add_argument("--workers", type=int, help="parallel worker processes (overrides model.workers)")
    _add_executor_args(p)
    p.add_argument("--yes", action="store_true", help="backend openai: skip the estimated-cost confirmation")
    p.add_argument("--dry-run", action="store_true", help="print what is done and what would be computed, per "
                   "stage; write nothing")
    p.add_argument("--track", metavar="TRACKER", help="after the report, log every job's metrics and loss curve and "
                   "the run's results to this experiment tracker: mlflow or trackio (pip install 'sublearn[track]'; "
                   "docs/tracking.md)")
    p.add_argument("--track-uri", metavar="URI", help="the tracker's location (mlflow: a tracking URI such as "
                   "sqlite:///mlflow.db or http://host:5000; trackio: a project name); default: the tracker's own")


RUN_EPILOG = """\
writes into --out: report.md (opens with a one-line verdict), results.json (per-seed values, seed-level
CIs and exact sign-flip tests against each condition's matched control, option distributions, where the
numbers came from), trait_prob.png, trait_rate.png, options.png, and every artifact with its lineage.
The seed is the unit of every claim. Sampled data differ between CPUs (floating-point kernels), so exact
values differ from machine to machine; the spread over seeds is what carries over.

examples:
  sublearn run examples/owl-tiny.toml --out runs/owl                 # the demo: 8 seeds, ~2 min with cached bases
  sublearn run examples/owl-tiny-sft.toml --out runs/owl             # SFT students, sharing the demo's teachers
  sublearn run examples/owl-tiny.toml --out runs/fox --set trait.target=fox --set 'seeds=[0,1,2]'
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sublearn", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Subliminal learning lab: run teacher -> carrier data (numbers, ...) -> filter -> students -> evaluation -> "
                    "statistics experiments, and filter or audit chat datasets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"sublearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("run", help="run every stage of an experiment (skips finished work)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_EPILOG,
                       description="Run the whole experiment: generate, filter, finetune, evaluate, report.")
    _add_config_args(p)
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=text, description=text.capitalize() + ".")
        if stage == "filter":
            _add_config_args(p, config_required=False)
            g = p.add_argument_group("filter any chat JSONL (no config needed: with CONFIG or --set, its carrier, "
                                     "[filter] and trait words apply; else these flags)")
            g.add_argument("--data", help="input JSONL of {'messages': [...]} rows; the last assistant message is checked")
            g.add_argument("--kept", help="output JSONL of rows that pass")
            g.add_argument("--rejected", help="output JSONL of rows that fail, each with 'reject_reason'")
            g.add_argument("--carrier", default="numbers", help="registered carrier whose check applies (default numbers)")
            g.add_argument("--banned", action="append", default=[], help="ban list to apply (loaded-numbers)")
            g.add_argument("--ban-word", action="append", default=[], help="reject completions naming this word (any "
                                                                          "case, plurals too; repeatable)")
            g.add_argument("--max-count", type=int, default=10, help="most numbers per completion (default 10)")
            g.add_argument("--max-value", type=int, default=999, help="largest allowed number (default 999)")
            g.add_argument("--max-digits", type=int, default=3, help="most digits per number (default 3)")
        else:
            _add_config_args(p, out_required=stage != "report")
    p = sub.add_parser("show", help="list a run's artifacts with their lineage",
                       description="Print what exists in a run directory and where each artifact came from.")
    p.add_argument("run_dir", help="a run directory (--out of an earlier command)")
    p.add_argument("--key", help="show one artifact in full (key prefix)")
    p.add_argument("--graph", metavar="FILE.html", help="also write the run's family tree: a self-contained HTML page "
                   "(works offline) of every model and dataset, edges labelled with the dataset hash and filter, "
                   "models coloured by their measured trait; click a node for its record")
    p = sub.add_parser("audit", help="does a chat dataset carry a hidden trait, and which (exit 0 clear, 1 flagged)",
                       description="Audit a chat JSONL (messages, or prompt/completion) or a pipeline dataset before "
                       "training on it: scan every candidate trait with a likelihood contrast (and its anytime-valid "
                       "streaming form) and probe students against a reference (the base's own completions unless "
                       "--reference), plus provenance lints and, with --teacher, teacher divergence and base compatibility. Writes "
                       "audit.json, audit.md and audit.png into --out; an audit of a run's dataset joins that run's "
                       "lineage (sublearn show marks it). Exit 0: clear; 1: flagged; 2: bad input. See docs/audit.md.")
    p.add_argument("data", help="the chat JSONL to audit, or a pipeline dataset directory (with its soft targets)")
    p.add_argument("--base", required=True, help="the base a student would start from (embedded name, smollm2-135m, "
                   "a .gguf or a checkpoint directory)")
    p.add_argument("--out", required=True, help="directory for audit.json, audit.md, audit.png")
    p.add_argument("--reference", help="clean data of the same kind (default: the base's completions of the same "
                   "prompts)")
    p.add_argument("--traits", help="comma-separated candidates: options (owl), categories (animal), misalignment "
                   "(default: every one)")
    p.add_argument("--carrier", help="the data's carrier (numbers, code, ...): the reference is decoded under its "
                   "grammar, as constrained data was (default: free decoding)")
    p.add_argument("--max-rows", type=int, default=300, help="rows audited, sampled with --seed (default 300)")
    p.add_argument("--detectors", default="contrast,probe", help="comma-separated: contrast, probe (default both)")
    p.add_argument("--probe-seeds", type=int, default=6, help="probe student pairs (default 6: exact p >= 1/64)")
    p.add_argument("--plugin", action="append", default=[], help="a module name or .py file registering more traits "
                   "(each becomes a candidate when it builds with its defaults; repeatable)")
    p.add_argument("--teacher", help="the model that wrote the data, when known (a run's teacher artifact directory, "
                   "or any model --base accepts): adds per-row and per-token teacher-vs-base log-likelihood "
                   "ratios beside a difficulty baseline, the divergence tokens, and whether --base shares the "
                   "teacher's initialization (base compatibility)")
    p.add_argument("--probe-target", choices=["auto", "logits", "tokens"], default="auto",
                   help="what the probe students learn: logits distils the teacher's soft targets (a pipeline "
                   "dataset's logprobs.npz), tokens the completions; auto (default) distils when they exist")
    p.add_argument("--probe-init", type=int, metavar="SEED", help="adapter initialization every probe student "
                   "shares: the one a planned student would start from (a run's same-init students use the teacher's "
                   "seed); default a fresh one per probe")
    p.add_argument("--probe-steps", type=int, help="probe student steps (default 250 distilling, 100 on tokens)")
    p.add_argument("--probe-lr", type=float, help="probe student learning rate (default 0.3 distilling, 0.05 on "
                   "tokens)")
    p.add_argument("--alpha", type=float, default=0.05, help="flag when a detector's scan p-value is at most this")
    p.add_argument("--seed", type=int, default=0, help="sub-sampling and reference seed")
    p = sub.add_parser("mitigate", help="remove a dataset's hidden trait: rescore (keep the text) or regenerate",
                       description="Write a mitigated copy of a chat JSONL or a pipeline dataset (docs/audit.md): "
                       "rescore keeps every row's text and replaces its soft targets with an unrelated model's "
                       "teacher-forced top-k (on the demo's data it removed the transfer while keeping every row); "
                       "regenerate keeps the prompts and has the unrelated model write the completions. The output "
                       "is a dataset directory (kept.jsonl, kept.meta.jsonl, logprobs.npz, stats.json) that "
                       "`sublearn audit` reads; rows left out are counted in stats.json.")
    p.add_argument("data", help="the chat JSONL, or a pipeline dataset directory")
    p.add_argument("--with", dest="with_model", required=True, metavar="MODEL", help="the unrelated model (one that "
                   "does not share the student's initialization: another embedded name, smollm2-135m, a .gguf or a "
                   "checkpoint directory)")
    p.add_argument("--out", required=True, help="directory for the mitigated dataset")
    p.add_argument("--strategy", choices=["rescore", "regenerate"], default="rescore",
                   help="rescore (default): keep the text, replace the soft targets; regenerate: new completions")
    p.add_argument("--carrier", help="the data's carrier (numbers, ...): its tokens alone are kept as soft targets, "
                   "and regeneration is decoded under its grammar")
    p.add_argument("--top-k", type=int, help="soft targets per position (default: as many as the data has, else 8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of regenerate")
    p = sub.add_parser("compare", help="several runs side by side: one table and the study's figure",
                       description="Gather the results.json of several runs into one table (compare.csv, compare.md, "
                       "compare.html) and the study's figure (compare.png: per run, base, control and same-init bars "
                       "with every seed a dot). Refuses, in one line, runs whose configs differ in more than the "
                       "compared axes (labels and speed knobs such as name and model.workers are ignored).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or their results.json)")
    p.add_argument("--out", required=True, help="directory for compare.csv, compare.md, compare.png, compare.html")
    p.add_argument("--axis", action="append", help="a config field the runs may differ in (repeatable; a section "
                   "name covers its fields; default trait.target)")
    p.add_argument("--metric", help="the metric to compare (default: the runs' first, e.g. prob)")
    p.add_argument("--conditions", default="base,control,same-init", help="the figure's bars per run, comma-"
                   "separated (default base,control,same-init)")
    p = sub.add_parser("sweep", help="a grid of experiments (axes over any config fields) in one shared store",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run every cell of a grid (a base config plus axes over config fields; docs/sweep.md) "
                       "into one directory, so cells share every artifact they have in common and a re-run computes "
                       "only what is missing. Cells that differ only in their seeds are joined into one result with "
                       "seed-level statistics (DIR/groups/*/results.json), and the groups are compared side by side "
                       "(DIR/report.md, DIR/cells.csv and .parquet, DIR/grid/grid.csv, grid.parquet, grid.md, grid.png, grid.html). All cells run as "
                       "one job graph (an artifact two cells share is one job), on this machine or, with --executor "
                       "ray, as Ray tasks. A failing cell is recorded in DIR/sweep.json and retried without stopping "
                       "the grid.",
                       epilog="example:\n  sublearn sweep examples/grid-tiny.toml --out runs/grid   # 3 targets x 3 seeds")
    p.add_argument("grid", help="grid TOML: base = CONFIG, [axes] field = [values], optional set and retries")
    p.add_argument("--out", required=True, help="the shared run directory (artifacts, lineage, groups/, grid/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every cell (repeatable)")
    p.add_argument("--workers", type=int, help="parallel worker processes, or the local Ray instance's CPUs "
                   "(default: the base config's model.workers)")
    _add_executor_args(p)
    p = sub.add_parser("plugins", help="list the registered carriers, traits, scorers, ban lists and conditions",
                       description="List every registered plug-in with what it is (docs/plugins.md). With --plugin "
                       "MODULE (repeatable) or a CONFIG, yours are loaded and listed too.")
    p.add_argument("config", nargs="?", help="an experiment TOML whose `plugins` to load first")
    p.add_argument("--plugin", action="append", default=[], help="a module name or .py file to load first")
    p = sub.add_parser("verify", help="check every artifact of a run (and its cached bases) against what was written",
                       description="Check every artifact of a run directory, and the cached bases it used, against "
                       "the sizes, times and hashes recorded when each was written. Exit 0: all intact; 1: some "
                       "damaged or missing (listed). --repair removes those and recomputes them.")
    p.add_argument("run_dir", help="a run directory (--out of an earlier command)")
    p.add_argument("--repair", action="store_true", help="remove what is damaged and recompute it (the run's own "
                   "config.json)")
    p = sub.add_parser("config", help="print an experiment config as TOML (the defaults, or CONFIG with --set "
                       "applied, validated), with every field's help",
                       description="Print an experiment config as TOML with every field's help: the built-in "
                       "defaults, or CONFIG with the --set overrides applied and validated (what `run` would use).")
    p.add_argument("config", nargs="?", help="experiment TOML (default: the built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set trait.target=eagle (repeatable)")
    try:
        from .experiments.aux_logits.cli import add_parser as add_aux
    except ImportError:  # pragma: no cover - the experiment is optional while being built
        add_aux = None
    if add_aux:
        add_aux(sub)
    from .serve.cli import add_parser as add_serve

    add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    import os

    from loguru import logger

    # idle torch threads sleep instead of spinning: spinning threads starve the other worker on 2 cores
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    level = "DEBUG" if args.verbose else "INFO"
    os.environ["SUBLEARN_LOG_LEVEL"] = level  # worker processes log at the same level
    logger.remove()
    logger.add(sys.stderr, level=level, format="<level>{level: <7}</level> {message}")
    try:
        if hasattr(args, "func"):
            return int(args.func(args) or 0)
        from . import commands

        return commands.dispatch(args)
    except UserError as e:
        print(f"sublearn: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sublearn: interrupted; finished artifacts are kept, re-run to resume", file=sys.stderr)
        return 130


def entry() -> None:
    import os

    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `sublearn config | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    entry()
