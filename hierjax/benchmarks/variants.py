"""The evidence: every variant, and GLM's lambda and k, trained at one budget over seeds.

    python -m hierjax.benchmarks.variants --config=configs/cifar100_wrn.py:depth=16,width=4 \
        --workdir=/tmp/sweep --seeds=3 --study=variants [--config.num_epochs=30 ...]
    python -m hierjax.benchmarks.variants ... --study=lambda --variant=OURS
    python -m hierjax.benchmarks.variants ... --study=k --variant=OURS

Studies (each run is `hierjax.train.train_and_evaluate` with the config as given, so all
runs of a study share network, epochs, batch size and schedule):
- `variants`: SM, SM-GLM, CSM, CSM-GLM, SC-CSM, OURS, CC (b = 1), CC (b = 2), OURS+CC,
  OURS with the P x Q x K hierarchical sampler (`OURS+PQK`, `sampler_pqk` as set), and
  OURS with GLM on L2-normalised features at the paper's lambda 0.8 (`OURS norm
  lambda=0.8`, the `scale` study's best row);
- `lambda`: `--variant` at loss.glm_weight = 0.2, 0.4, ..., 1.4 (the paper's grid);
- `k`: `--variant` at loss.glm_k = 1, 3, 5, 10;
- `scale`: GLM's scale question from scratch: SM, SC-CSM (the cascade without GLM), and
  OURS at lambda = 0.05 and 0.8, each on raw and on L2-normalised features
  (`loss.glm_normalize`).
Each finished run's result is also written to `--results`/scratch/<study>/<run>/
seed<s>.json (committed, and reused like the transfer results).
`--protocol=transfer` runs the transfer protocol of BENCHMARKS.md
(`hierjax.benchmarks.transfer`): the base config's network is pretrained with flat
softmax on the CIFAR-100 source classes once (WORKDIR/pretrain, `--pretrain_epochs`,
`--pretrain_lr`), then every run fine-tunes from it on the target classes, validating on
a split of their training images and reporting the test set at the end. Its studies:
`variants` (SM, SC-CSM, OURS, SM-GLM, CC b=1, CC at `--best_b`, OURS+CC, and CC in two
steps: SM for half the epochs, then CC from it, and OURS with the papers' raw-feature GLM;
every other GLM row, and the `lambda` study (`--variant`), on L2-normalised features, the
fine-tuning default), `b` (CC) and `lr` (SM). Each
finished transfer run's small result file (resolved config, validation curve, final
validation and test metrics, wall time) goes to `--results`/transfer/<study>/<run>/
seed<s>.json, committed, and is reused: a sweep resumes from the repository.

Runs live in WORKDIR/<study>/<run>/seed<s> (give each --variant of a lambda or k study
its own WORKDIR); a finished run's result.json is reused, so re-running the command
completes an interrupted sweep. `--only=SM,OURS` runs only those rows of a study;
`--cached` trains nothing and redraws the table and plot from the result files there are
(rows with fewer seeds pair only the seeds they share with SM). Writes a markdown table
(mean ± 95% Student-t CI over seeds; the gain over SM is the CI of the per-seed paired
differences) and PNG plots; with --write the table goes into BENCHMARKS.md and the plots
into docs/figures/.
"""

from __future__ import annotations

import copy
import json
import pathlib
import shlex
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from hierjax.benchmarks import common, markdown, stats, sweep_figure, transfer
from hierjax.benchmarks.results import LOCATION_KEYS, finished, gain_cell, run_rows
from hierjax.errors import ConfigError, Diverged, Preempted

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base config of every run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and results go.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per run (0, 1, ...).")
_STUDY = flags.DEFINE_enum("study", "variants", ["variants", "lambda", "k", "scale", "b", "lr"],
                          "What to vary (b, lr: transfer protocol).")
_VARIANT = flags.DEFINE_string("variant", "OURS", "Variant of the lambda and k studies.")
_WRITE = flags.DEFINE_bool("write", False, "Put the table in BENCHMARKS.md and the plots "
                           "in docs/figures/.")
_NOTE = flags.DEFINE_string("note", "", "A line saying what the budget is, for the table.")
_PROTOCOL = flags.DEFINE_enum("protocol", "scratch", ["scratch", "transfer"],
                              "scratch: train on the config's data; transfer: pretrain on "
                              "the CIFAR-100 source classes, fine-tune on the target ones")
_PRETRAIN_EPOCHS = flags.DEFINE_integer("pretrain_epochs", 15, "transfer: pretraining epochs")
_PRETRAIN_LR = flags.DEFINE_float("pretrain_lr", 0.1, "transfer: pretraining peak lr")
_BEST_B = flags.DEFINE_float("best_b", 2.0, "transfer: the b chosen on validation (b study)")
_ONLY = flags.DEFINE_list("only", [], "run only these runs of the study (names as in the "
                          "table, e.g. SM,OURS)")
_CACHED = flags.DEFINE_bool("cached", False, "train nothing; the table and plot of the "
                            "result files there are (rows with the seeds they have)")
RESULTS = common.REPO_ROOT / "docs" / "results"
_RESULTS = flags.DEFINE_string("results", str(RESULTS),
                               "where the per-run result files are kept")
flags.mark_flags_as_required(["config", "workdir"])

FIGURES = common.REPO_ROOT / "docs" / "figures"
LAMBDAS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4)
KS = (1, 3, 5, 10)
BS = (0.5, 1.0, 2.0, 4.0)
LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
# (column, metric key, scale)
COLUMNS = (("fine top-1 %", "top1_from_fine/0", 100), ("coarse top-1 %", "top1_from_fine/1", 100),
           ("fine top-5 %", "top5/0", 100), ("mistake severity", "mistake_severity", 1),
           ("train min", "seconds", 1 / 60))


def study_runs(study: str, variant: str) -> list[tuple[str, str, dict]]:
    """(run name, variant, config overrides) of a study."""
    if study == "variants":
        runs = [(v, v, {}) for v in ("SM", "SM-GLM", "CSM", "CSM-GLM", "SC-CSM", "OURS")]
        runs += [("CC b=1", "CC", {"loss.coarse_weight": 1.0}),
                 ("CC b=2", "CC", {"loss.coarse_weight": 2.0}),
                 ("OURS+CC", "OURS+CC", {}), ("OURS+PQK", "OURS", {"data.sampler": "hierarchical"}),
                 # GLM on normalised features at the paper's lambda: the scale study's best.
                 ("OURS norm lambda=0.8", "OURS",
                  {"loss.glm_weight": 0.8, "loss.glm_normalize": True})]
        return runs
    if study == "lambda":
        return [(f"lambda={v:g}", variant, {"loss.glm_weight": v}) for v in LAMBDAS]
    if study == "scale":
        # SC-CSM separates the cascade's share of OURS's gain from GLM's.
        return [("SM", "SM", {}), ("SC-CSM", "SC-CSM", {})] + [
            (f"OURS{' norm' if norm else ''} lambda={v:g}", "OURS",
             {"loss.glm_weight": v, "loss.glm_normalize": norm})
            for norm in (False, True) for v in (0.05, 0.8)]
    return [(f"k={v}", variant, {"loss.glm_k": v}) for v in KS]


def run_config(base, variant: str, overrides: dict, seed: int):
    """The resolved settings of base with the variant, the overrides and the seed."""
    from hierjax import settings

    config = copy.deepcopy(base)
    settings.set_keys(config, {"variant": variant, "seed": seed, **overrides})
    return settings.resolve(config)


def metric_rows(workdir: pathlib.Path) -> list[dict]:
    """The records of the run's metrics.jsonl (none when it stopped before its first)."""
    path = workdir / "metrics.jsonl"
    return ([json.loads(line) for line in path.read_text().splitlines()]
            if path.exists() else [])


def eval_curve(workdir: pathlib.Path, steps_per_epoch: int) -> list[tuple[float, float]]:
    """(epoch, fine top-1) of every periodic evaluation in the run's metrics.jsonl (on
    the validation split when the run has one, else on the test split)."""
    return [(r["step"] / steps_per_epoch, r["top1_from_fine/0"])
            for r in metric_rows(workdir) if r["split"] in ("eval", "val")]


def _train_or_diverge(config, workdir: pathlib.Path) -> tuple[dict | None, dict]:
    """(final metrics, {}) of a finished run; (None, {"diverged": {"step", "reason"}}) of
    one stopped by a non-finite loss, gradient or parameter: a result of its settings
    (e.g. a learning rate too high for a variant), recorded so that the sweep goes on."""
    from hierjax import train

    try:
        return train.train_and_evaluate(config, workdir), {}
    except Diverged as e:
        reason = str(e).split(";")[0]
        logging.warning("%s diverged (%s); recorded as such, the sweep goes on.", workdir,
                        reason)
        return None, {"diverged": {"step": e.step, "reason": reason}}


def cached_result(result_path: pathlib.Path, config) -> dict | None:
    """The result stored at `result_path`, or None; an error when it was trained with
    settings other than `config`'s (a changed flag must not reuse a stale result)."""
    from hierjax import settings

    if not result_path.exists():
        return None
    result = json.loads(result_path.read_text())
    stored = result.get("config")
    if stored is None:  # result files from before configs were stored
        return result
    # A key added to hierjax after the result was written had its default then.
    stored = {**settings.defaults(), **stored}
    now = json.loads(json.dumps(settings.to_dict(config)))
    differ = {k: v for k, v in settings.diff(stored, now).items() if k not in LOCATION_KEYS}
    if differ:
        shown = "; ".join(f"{k}: {old!r} there, {new!r} now"
                          for k, (old, new) in list(differ.items())[:4])
        raise ConfigError(
            f"{result_path} was trained with other settings ({shown}"
            f"{'; ...' if len(differ) > 4 else ''}). Give this sweep its own --results "
            "folder, or delete the file to train the run again.")
    return result


# A run's wall seconds before it was stopped by SIGTERM, added when it resumes.
STOPPED_SECONDS_FILE = "stopped_seconds.json"


def _timed_train(config, workdir: pathlib.Path) -> tuple[dict | None, dict, float]:
    """_train_or_diverge's result and the run's wall seconds over all its segments: a run
    stopped by SIGTERM (`Preempted`) keeps the seconds it ran in WORKDIR/
    stopped_seconds.json and its resumption adds them (a segment killed outright cannot
    be counted: a warning says so)."""
    path = workdir / STOPPED_SECONDS_FILE
    before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
    if (workdir / "checkpoints").exists() and not path.exists():
        logging.warning("%s holds a partial run whose time was not recorded (it was killed, "
                        "not stopped by SIGTERM); its time will only count the rest.", workdir)
    start = time.perf_counter()
    try:
        metrics, diverged = _train_or_diverge(config, workdir)
    except Preempted:
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": before + time.perf_counter() - start}))
        raise
    return metrics, diverged, before + time.perf_counter() - start


def train_run(config, workdir: pathlib.Path, result_path: pathlib.Path | None = None) -> dict:
    """The run's result: final metrics (None if it diverged, with "diverged" set), wall
    seconds, eval curve, resolved config, cached in `result_path` (default
    WORKDIR/result.json). `config`: resolved settings."""
    from hierjax import data, settings

    result_path = result_path or workdir / "result.json"
    if (cached := cached_result(result_path, config)) is not None:
        return cached
    metrics, diverged, seconds = _timed_train(config, workdir)
    train_set, _ = data.build_sources(config.data)
    result = {"metrics": metrics, "seconds": seconds,
              "curve": eval_curve(workdir, len(train_set) // config.batch_size),
              "config": settings.to_dict(config), **diverged}
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result))
    return result


def sibling_fraction(config) -> float:
    """Mean over one epoch's batches of `batch_sibling_stats(...)["with_sibling"]`
    (`config`: resolved settings)."""
    from hierjax import data
    from hierjax.data.sampler import build_sampler

    train_set, _ = data.build_sources(config.data)
    sampler = build_sampler(config.data, config.batch_size)
    order = sampler(train_set, seed=config.seed, epoch=0)
    batches = order[:len(order) // config.batch_size * config.batch_size].reshape(
        -1, config.batch_size)
    return float(np.mean([data.batch_sibling_stats(train_set.labels_Nxh[b])["with_sibling"]
                          for b in batches]))


def table(results: dict[str, list[dict]], siblings: dict[str, float]) -> str:
    """Markdown: one row per run, mean ± 95% CI over the seeds that finished (a single
    seed: its value; diverged seeds named beside the run), gain over SM as the CI of the
    per-seed paired differences."""
    header = ["run", "seeds", *(c for c, _, _ in COLUMNS), "gain over SM (fine top-1, paired)",
              "classes with a sibling in the batch"]
    baseline = finished(results.get("SM", []))

    def cells(name, seeds):
        means = [stats.format_ci(*stats.mean_ci(
            [scale * (r["seconds"] if key == "seconds" else r["metrics"][key]) for r in seeds]))
            for _, key, scale in COLUMNS]
        gain = (gain_cell(seeds, baseline, lambda r: 100 * r["metrics"]["top1_from_fine/0"])
                if baseline and name != "SM" else "-")
        return means + [gain, f"{100 * siblings[name]:.0f}%"]

    return markdown.table(header, run_rows(results, len(header), cells))


# ------------------------------------------------------------------ transfer protocol

def transfer_study_runs(study: str, variant: str, best_b: float) -> list[tuple[str, str, dict]]:
    """(run name, variant, overrides) of a transfer study; variant "CC-2step" is the
    two-step coarse-label constraint."""
    # GLM on L2-normalised features, the fine-tuning default (hierjax/recipes.py), in
    # every row but "OURS raw-GLM", the papers' own form, whatever the base config says.
    norm = {"loss.glm_normalize": True}
    if study == "variants":
        runs = [("SM", "SM", {}), ("SC-CSM", "SC-CSM", {}), ("OURS", "OURS", norm),
                ("SM-GLM", "SM-GLM", norm)]
        for b in dict.fromkeys((1.0, best_b)):
            runs.append((f"CC b={b:g}", "CC", {"loss.coarse_weight": b}))
        return runs + [("OURS+CC", "OURS+CC", norm), ("CC two-step", "CC-2step", {}),
                       ("OURS raw-GLM", "OURS", {"loss.glm_normalize": False})]
    if study == "lambda":
        return [(f"lambda={v:g}", variant, {"loss.glm_weight": v, **norm}) for v in LAMBDAS]
    if study == "b":
        return [(f"b={v:g}", "CC", {"loss.coarse_weight": v}) for v in BS]
    if study == "lr":
        return [(f"lr={v:g}", "SM", {"optimizer.lr": v}) for v in LRS]
    return study_runs(study, variant)


def _slug(name: str) -> str:
    return name.replace(" ", "").replace("=", "")


def _fit(config, workdir: pathlib.Path) -> dict:
    """Trains (or resumes) one run; its test metrics (None if it diverged, with
    "diverged" set), final validation metrics, wall seconds and validation curve
    [(epoch, fine top-1, coarse top-1)]."""
    from hierjax import data

    test, diverged, seconds = _timed_train(config, workdir)
    steps_per_epoch = len(data.build_splits(config.data).train) // config.batch_size
    val = [r for r in metric_rows(workdir) if r["split"] == "val"]
    return {"test": test, "val": val[-1] if val else {}, "seconds": seconds,
            "curve": [(r["step"] / steps_per_epoch, r["top1_from_fine/0"],
                       r["top1_from_fine/1"]) for r in val], **diverged}


def transfer_run(base, pretrained: pathlib.Path, name: str, variant: str, overrides: dict,
                 seed: int, run_dir: pathlib.Path, result_path: pathlib.Path) -> dict:
    """One fine-tuning run of the transfer protocol, cached in `result_path`."""
    from hierjax import settings

    if variant == "CC-2step":
        stage1, stage2 = transfer.two_step_configs(base, pretrained, run_dir / "stage1",
                                                   overrides, seed)
        if (cached := cached_result(result_path, stage2)) is not None:
            return cached
        first = _fit(stage1, run_dir / "stage1")
        if "diverged" in first:  # no stage 1 to start stage 2 from
            second = {"curve": [], "seconds": 0.0}
        else:
            second = _fit(stage2, run_dir / "stage2")
        offset = stage1.num_epochs
        result = {**first, **second, "seconds": first["seconds"] + second["seconds"],
                  "curve": first["curve"] + [(e + offset, *rest)
                                             for e, *rest in second["curve"]],
                  "config": settings.to_dict(stage2), "stage1_config": settings.to_dict(stage1)}
    else:
        config = transfer.finetune_config(base, pretrained, variant, overrides, seed)
        if (cached := cached_result(result_path, config)) is not None:
            return cached
        result = {**_fit(config, run_dir), "config": settings.to_dict(config)}
    result["name"], result["seed"] = name, seed
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1))
    return result


def pretrain(base, workdir: pathlib.Path, results: pathlib.Path) -> pathlib.Path:
    """The pretrained run's workdir, trained once (its result file is written next to the
    fine-tuning results; the checkpoints stay in the workdir)."""
    run_dir = workdir / "pretrain"
    if not (run_dir / "result.json").exists():
        config = transfer.pretrain_config(base, epochs=_PRETRAIN_EPOCHS.value,
                                          lr=_PRETRAIN_LR.value)
        train_run(config, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    if "diverged" in result:
        raise ConfigError(
            f"Pretraining in {run_dir} diverged ({result['diverged']['reason']}): no network "
            f"to fine-tune from. Lower --pretrain_lr (now {_PRETRAIN_LR.value}) and delete "
            f"{run_dir} to pretrain again.")
    results.mkdir(parents=True, exist_ok=True)
    (results / "pretrain.json").write_text((run_dir / "result.json").read_text())
    return run_dir


def transfer_table(results: dict[str, list[dict]], baseline: str | None) -> str:
    """Markdown: mean ± 95% CI over the seeds that finished of the test metrics, the
    validation fine top-1, and the gain over `baseline` as the CI of the per-seed paired
    differences; diverged seeds are named beside the run."""
    columns = (("test fine top-1 %", "top1_from_fine/0", 100),
               ("test coarse top-1 % (via fine)", "top1_from_fine/1", 100),
               ("test coarse top-1 % (own head)", "top1/1", 100),
               ("test fine top-5 %", "top5/0", 100),
               ("mistake severity", "mistake_severity", 1))
    header = ["run", "seeds", *(c for c, _, _ in columns), "val fine top-1 %", "train min",
              f"gain over {baseline} (fine top-1, paired)" if baseline else "gain"]
    base_runs = finished(results.get(baseline, [])) if baseline else None

    def cells(name, runs):
        out = []
        for _, key, scale in columns:
            values = [scale * r["test"][key] for r in runs if key in r["test"]]
            out.append(stats.format_ci(*stats.mean_ci(values)) if values else "-")
        out.append(stats.format_ci(*stats.mean_ci(
            [100 * r["val"].get("top1_from_fine/0", float("nan")) for r in runs])))
        out.append(stats.format_ci(*stats.mean_ci([r["seconds"] / 60 for r in runs]), 1))
        out.append(gain_cell(runs, base_runs, lambda r: 100 * r["test"]["top1_from_fine/0"])
                   if base_runs and name != baseline else "-")
        return out

    return markdown.table(header, run_rows(results, len(header), cells))


def selected(runs: list[tuple[str, str, dict]], only: list[str]) -> list[tuple[str, str, dict]]:
    """The runs named in `only` (--only; all when it names none); an unknown name is an
    error, not an empty sweep."""
    unknown = set(only) - {name for name, _, _ in runs}
    if unknown:
        raise ConfigError(f"--only={','.join(sorted(unknown))}: no such run in this study; "
                          f"its runs are {', '.join(name for name, _, _ in runs)}.")
    return [r for r in runs if not only or r[0] in only]


def main_transfer(base, study: str, workdir: pathlib.Path) -> None:
    results_dir = pathlib.Path(_RESULTS.value) / "transfer"
    pretrained = None if _CACHED.value else pretrain(base, workdir, results_dir)
    runs = selected(transfer_study_runs(study, _VARIANT.value, _BEST_B.value), _ONLY.value)

    def run_one(name, variant, overrides, seed, run_dir, result_path):
        logging.info("=== transfer %s / %s, seed %d", study, name, seed)
        return transfer_run(base, pretrained, name, variant, overrides, seed, run_dir,
                            result_path)

    results = _seed_major(runs, workdir / study, results_dir / study, run_one)
    baseline = "SM" if study == "variants" else None
    name = table_name(base, _RESULTS.value)
    figure = (FIGURES if _WRITE.value else workdir) / f"transfer_{study}_{name}.png"
    sweep_figure.draw(results, figure, title=f"transfer {study}", baseline=baseline,
                      test_top1=lambda r: 100 * r["test"]["top1_from_fine/0"],
                      swept=None if baseline else (study, "validation", lambda r: r["val"]),
                      log_x=study == "lr")
    pre = json.loads((results_dir / "pretrain.json").read_text())
    body = "\n".join([
        f"### transfer {study}: {name}", "",
        f"{common.hardware_line()}. {_NOTE.value}".rstrip(), "",
        f"    python -m hierjax.benchmarks.variants {shlex.join(sys.argv[1:])}", "",
        f"Pretrained: flat softmax on the 40 source classes, {_PRETRAIN_EPOCHS.value} "
        f"epochs, source test fine top-1 {100 * pre['metrics']['top1_from_fine/0']:.1f}%. "
        f"Fine-tuning: {base.num_epochs} epochs on the 60 target classes, "
        f"{transfer.VAL_FRACTION:g} of their training images held out for validation; "
        "test = the 6,000 target test images, evaluated once at the end of each run.", "",
        transfer_table(results, baseline), "",
        f"![transfer {study}]({figure.relative_to(common.REPO_ROOT) if _WRITE.value else figure})"])
    print(body)
    if _WRITE.value:
        common.write_section(f"transfer-{study}-{name}", body)


def main(argv):
    from hierjax.cli import run_command

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        run_command(lambda: sweep(_CONFIG.value, _STUDY.value))
    except Preempted as e:  # the stopped run is saved, and cached only once it finishes
        logging.info("Sweep stopped: %s (finished runs keep their result files).", e)


def sweep(base, study: str) -> None:
    workdir = pathlib.Path(_WORKDIR.value)
    if _PROTOCOL.value == "transfer":
        return main_transfer(base, study, workdir)
    runs = selected(study_runs(study, _VARIANT.value), _ONLY.value)

    def run_one(name, variant, overrides, seed, run_dir, result_path):
        logging.info("=== %s / %s, seed %d", study, name, seed)
        return train_run(run_config(base, variant, overrides, seed), run_dir, result_path)

    results = _seed_major(runs, workdir / study,
                          pathlib.Path(_RESULTS.value) / "scratch" / study, run_one)
    siblings = {name: sibling_fraction(run_config(base, variant, overrides, 0))
                for name, variant, overrides in runs if name in results}
    title = study if study in ("variants", "scale") else f"{study}-{_VARIANT.value}"
    name = table_name(base, _RESULTS.value)
    figure = (FIGURES if _WRITE.value else workdir) / f"{title}_{name}.png"
    knob = study not in ("variants", "scale")  # a study of one knob's values
    sweep_figure.draw(results, figure, title=title, baseline=None if knob else "SM",
                      test_top1=lambda r: 100 * r["metrics"]["top1_from_fine/0"],
                      swept=(study, "test", lambda r: r["metrics"]) if knob else None)
    body = "\n".join([
        f"### {title}: {name}",
        "",
        f"{common.hardware_line()}. {_NOTE.value}".rstrip(),
        "",
        f"    python -m hierjax.benchmarks.variants {shlex.join(sys.argv[1:])}",
        "",
        f"Network {base.model.name}"
        + (f"-{base.model.wrn_depth}-{base.model.wrn_width}" if base.model.name == "wrn" else "")
        + f", {base.num_steps or base.num_epochs} {'steps' if base.num_steps else 'epochs'}, "
          f"batch {base.batch_size}, lr {base.optimizer.lr} ({base.optimizer.schedule}, "
          f"warm-up {base.optimizer.warmup_epochs} epochs), weight decay "
          f"{base.optimizer.weight_decay}, {base.data.max_train_examples or 'all'} training "
          f"images, up to {_SEEDS.value} seed{'s' if _SEEDS.value != 1 else ''}; loss.glm_weight "
          f"{base.loss.glm_weight if base.loss.glm_weight is not None else 'the variant default'}"
          f" where the run name sets no lambda, k {base.loss.glm_k}.",
        "",
        table(results, siblings),
        "",
        f"![{study}]({figure.relative_to(common.REPO_ROOT) if _WRITE.value else figure})",
    ])
    print(body)
    if _WRITE.value:
        common.write_section(f"{title}-{name}", body)


def _seed_major(runs, run_root: pathlib.Path, result_root: pathlib.Path,
                run_one) -> dict[str, list[dict]]:
    """{run name: results over seeds 0..--seeds-1}, trained seed by seed, so that an
    interrupted sweep leaves complete, paired seeds. `run_one(name, variant, overrides,
    seed, run_dir, result_path)` returns a run's result; with --cached it is not called and
    a run without a result file is left out; runs with no result at all are left out of
    the dict."""
    results: dict[str, list[dict]] = {name: [] for name, _, _ in runs}
    for seed in range(_SEEDS.value):
        for name, variant, overrides in runs:
            where = pathlib.Path(_slug(name))
            result_path = result_root / where / f"seed{seed}.json"
            if _CACHED.value:
                result = (json.loads(result_path.read_text()) if result_path.exists()
                          else None)
            else:
                result = run_one(name, variant, overrides, seed,
                                 run_root / where / f"seed{seed}", result_path)
            if result is not None:
                results[name].append({**result, "seed": seed})
    return {name: found for name, found in results.items() if found}


def table_name(config, results: str) -> str:
    """The name of a sweep's table, BENCHMARKS.md section and figure: "<data>-<model>",
    then "-<folder name>" unless `results` (--results) is the default folder, so that a
    sweep with its own result files (another learning rate, budget) never overwrites
    another's."""
    folder = pathlib.Path(results).resolve()
    label = "" if folder == RESULTS.resolve() else f"-{folder.name}"
    return f"{config.data.name}-{config.model.name}{label}"


if __name__ == "__main__":
    app.run(main)
