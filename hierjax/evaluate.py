"""Evaluate a checkpoint (or an exported model) on a split, and write the report.

    python -m hierjax.evaluate --workdir W [--checkpoint latest|best|STEP]
        [--split test|val|train] [--decode fine|marginal|joint] [--out DIR] [--no_plots]
    python -m hierjax.evaluate --model MODEL_DIR [--split ...] [--decode ...]

Reads the run's saved config (W/config.json, or the model folder's), restores the
checkpoint read-only (no workdir lock: it works while the run is still training;
`hierjax.restore`), evaluates every example of the split once, and writes into
W/eval/<checkpoint>-<split>/ (MODEL_DIR/eval/model-<split>/ for an exported model; a
`--decode` other than the run's config.eval.decode adds -<decode>):

  table.txt         the per-level table the training prints at its end
  metrics.json      every rate (`hierjax.decode.summarize` names) and the step
  per_class_<l>_<level>.csv (per class: support, top-1, top-5, most frequent confusion),
  confusion_<l>_<level>.png (tree-ordered; every coarse level, the fine level when it has
  at most 200 classes), severity.png     (`hierjax.eval_report.write_report`)

The metrics are the sums of `hierjax.train_step.eval_metrics` over the same batches
and devices as the training loop's evaluation, so evaluating the last checkpoint of a
finished run on its test split gives its final table exactly. The splits: test (the
run's config.data.eval_split), val (its validation split) and train (what it trained on,
unaugmented); `hierjax.data.build_splits`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import logging
import numpy as np

from hierjax import data, decode as decode_lib, metrics
from hierjax.errors import ConfigError
from hierjax.data.build import SPLITS
from hierjax.eval_report import MAX_CONFUSION_CLASSES, write_report
from hierjax.inference import check_variables, eval_context
from hierjax.model_files import TrainedModel
from hierjax.prefetch import replicate
from hierjax.reporting import ProgressBar, evaluation_table
from hierjax.settings import check_decode
from hierjax.train_step import eval_logits, eval_metrics

TOP_K = 5  # the top<k> column of the per-class tables


def _report_step(variables, batch, *, ctx, method: str, k: int, num_classes):
    """Per device: the metric sums of the training loop's evaluation, the decoded paths
    [b, h] and whether each label is among the decode's top-k of its level [b, h]."""
    logits = eval_logits(variables, batch["image"], ctx)
    sums = eval_metrics(logits, batch, ctx, method)
    preds = decode_lib.decode(logits, ctx.ancestors, method)
    probs = decode_lib.level_probabilities(logits, ctx.ancestors, method,
                                           num_classes=num_classes)
    hits = [(jax.lax.top_k(p, min(k, p.shape[-1]))[1] == batch["labels"][:, l, None]).any(-1)
            for l, p in enumerate(probs)]
    return sums, preds, jnp.stack(hits, axis=-1)


def evaluate(trained: TrainedModel, split: str = "test", *, decode: str | None = None,
             out_dir=None, title: str = "", plots: bool = True,
             splits: data.Splits | None = None) -> dict[str, float]:
    """Evaluates `trained` on its run's `split` (train | val | test); returns the rates
    (with "step") and, with `out_dir`, writes the report there (module docstring).
    `splits`: the run's `data.build_splits`, when the caller has them."""
    s = trained.settings
    method = decode or s.eval.decode
    source = (splits or data.build_splits(s.data)).get(split)
    if source.hierarchy != trained.hierarchy:
        raise ConfigError(
            f"{trained.origin}: the model's hierarchy {trained.hierarchy.num_classes} is not "
            f"the one of its data ({source.hierarchy.num_classes}, {source.name}); was the "
            "data changed since it was trained?")
    devices = jax.local_devices()
    # The run's batch over this machine's devices (rounded up to a multiple of them).
    batch = -(-s.batch_size // len(devices)) * len(devices)
    eval_input = data.build_eval_input(dataclasses.replace(s, batch_size=batch), source,
                                       num_devices=len(devices))
    ctx = eval_context(s, trained.hierarchy)
    check_variables(trained, ctx)
    check_decode(method, s.variant)
    step = jax.pmap(functools.partial(_report_step, ctx=ctx, method=method, k=TOP_K,
                                      num_classes=tuple(trained.hierarchy.num_classes)))
    variables = replicate(trained.variables, devices)
    totals, labels, preds, hits = {}, [], [], []
    progress = ProgressBar(eval_input.num_batches, images_per_step=batch)
    try:
        for i, batch_DxB in enumerate(eval_input.batches()):
            sums, p, h = step(variables, batch_DxB)
            totals = metrics.merge(totals, sums)
            valid = batch_DxB["valid"].reshape(-1)
            labels.append(batch_DxB["labels"].reshape(-1, batch_DxB["labels"].shape[-1])[valid])
            preds.append(np.asarray(p).reshape(valid.shape[0], -1)[valid])
            hits.append(np.asarray(h).reshape(valid.shape[0], -1)[valid])
            progress.update(i + 1)
    finally:
        progress.close()
        eval_input.close()
    totals = jax.tree.map(lambda x: np.sum(np.asarray(x), 0), totals)
    rates = {**decode_lib.summarize(totals), "step": trained.step}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.txt").write_text(table(rates, trained, split) + "\n")
        write_report(out, trained.hierarchy, np.concatenate(labels), np.concatenate(preds),
                     rates, topk=np.concatenate(hits), k=TOP_K, plots=plots and _can_plot(),
                     title=title or f"step {trained.step}, {split}, {method} decode",
                     # Every coarse level gets its confusion matrix, the fine one up to
                     # MAX_CONFUSION_CLASSES classes.
                     max_confusion_classes=max(MAX_CONFUSION_CLASSES,
                                               *trained.hierarchy.num_classes[1:], 0))
    return rates


def _can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logging.warning("matplotlib is not installed: writing no PNGs (pip install "
                        "matplotlib, or hierjax[bench])")
        return False
    return True


def table(rates, trained: TrainedModel, split: str) -> str:
    """The per-level table, headed by what was evaluated."""
    from hierjax.train import split_label

    return (f"Evaluation of {trained.origin} (step {trained.step}) on "
            f"{int(rates['count'])} examples of {split_label(trained.settings, split)}:\n"
            f"{evaluation_table(rates, trained.hierarchy)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hierjax.evaluate", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="the run's workdir (its config.json and checkpoints)")
    where.add_argument("--model", help="an exported model folder (python -m hierjax.export)")
    parser.add_argument("--checkpoint", default="latest",
                        help="with --workdir: latest | best | a step number (default latest)")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="test (default), val (the validation split) or train")
    parser.add_argument("--decode", choices=decode_lib.DECODES,
                        help="fine | marginal | joint (default: the run's config.eval.decode)")
    parser.add_argument("--out", help="report folder (default: W/eval/<checkpoint>-<split>)")
    parser.add_argument("--no_plots", action="store_true",
                        help="write the CSV and JSON files only (no matplotlib needed)")
    return parser


def load(args) -> tuple[TrainedModel, data.Splits, Path]:
    """The model the command line names, its data splits and the root of its eval/
    folder."""
    if args.model:
        from hierjax import model_files

        trained = model_files.read(args.model)
        return trained, data.build_splits(trained.settings.data), Path(args.model).expanduser()
    from hierjax import restore

    try:
        checkpoint = restore.parse_checkpoint(args.checkpoint)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    s = restore.read_settings(args.workdir)
    splits = data.build_splits(s.data)
    trained = restore.restore(args.workdir, checkpoint, settings=s,
                              hierarchy=splits.train.hierarchy)
    return trained, splits, Path(args.workdir).expanduser()


def main(argv=None) -> None:
    args = _parser().parse_args(argv)

    def command():
        trained, splits, root = load(args)
        label = "model" if args.model else args.checkpoint
        decode = args.decode
        name = f"{label}-{args.split}"
        if decode and decode != trained.settings.eval.decode:
            name += f"-{decode}"
        out = Path(args.out) if args.out else root / "eval" / name
        rates = evaluate(trained, args.split, decode=decode, out_dir=out,
                         plots=not args.no_plots, splits=splits)
        print(table(rates, trained, args.split), flush=True)
        print(f"Wrote {out}/", flush=True)

    from hierjax.cli import run_command

    run_command(command)


if __name__ == "__main__":
    main()
