"""Export a checkpoint as a self-contained model folder (`hierjax.model_files`).

    python -m hierjax.export --workdir W [--checkpoint latest|best|STEP] --out MODEL_DIR

MODEL_DIR then holds model.safetensors (parameters and BatchNorm statistics),
config.json, hierarchy.csv and preprocessing.json; `hierjax.Classifier.load(MODEL_DIR)`,
`python -m hierjax.predict --model MODEL_DIR` and `python -m hierjax.evaluate --model
MODEL_DIR` read it without the workdir or orbax. The checkpoint is read read-only, so
a run that is still training can be exported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hierjax import model_files
from hierjax.errors import ConfigError


def export(workdir, out, checkpoint: str | int = "latest", *, overwrite: bool = False
           ) -> model_files.TrainedModel:
    """Writes checkpoint `checkpoint` of the run in `workdir` to the folder `out`;
    returns the exported model. An `out` that holds files is refused unless
    `overwrite`."""
    from hierjax import restore

    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; give a new folder, or "
                          "--overwrite to replace the model there")
    trained = restore.restore(workdir, checkpoint)
    model_files.write(out, trained)
    return trained


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hierjax.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="the run's workdir")
    parser.add_argument("--checkpoint", default="latest",
                        help="latest | best | a step number (default latest)")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of a model already in --out")
    args = parser.parse_args(argv)

    def command():
        from hierjax.restore import parse_checkpoint

        try:
            checkpoint = parse_checkpoint(args.checkpoint)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        trained = export(args.workdir, args.out, checkpoint, overwrite=args.overwrite)
        print(f"Exported {trained.origin} ({trained.settings.model.name}, variant "
              f"{trained.settings.variant}, classes per level "
              f"{dict(zip(trained.hierarchy.level_names, trained.hierarchy.num_classes))}) "
              f"to {Path(args.out)}/: {', '.join(model_files.FILES)}", flush=True)

    from hierjax.cli import run_command

    run_command(command)


if __name__ == "__main__":
    main()
