"""Errors the user can fix: a bad config, data, hierarchy, archive, checkpoint or workdir.

`hierjax.main` (and the other commands) print such an error's message alone and exit
with status 2; any other exception is a bug and keeps its traceback. Each class also
derives from the built-in type callers would catch for it.
"""


class UserError(Exception):
    """Something the user gave is wrong; the message says what and how to fix it."""


class ConfigError(UserError, ValueError):
    """An invalid config key, value or combination."""


class PretrainedError(UserError, ValueError):
    """A pretrained-weights file that is missing or does not fit the model."""


class PretrainedNotFound(PretrainedError, FileNotFoundError):
    """A pretrained-weights file that does not exist."""


class DataError(UserError, ValueError):
    """Unreadable, missing or inconsistent data (images, labels, folders)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data folder or file that is not where the config says."""


class HierarchyError(UserError, ValueError):
    """An invalid hierarchy file or tree."""


class HierarchyNotFound(HierarchyError, FileNotFoundError):
    """A hierarchy file that does not exist."""


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint, or one that does not fit this run."""


class WorkdirError(UserError, RuntimeError):
    """The workdir is in use by another run, or holds another run's config."""


class InitFromError(UserError, ValueError):
    """config.model.init_from names no usable run, or one whose model does not fit."""


class DistributedError(UserError, RuntimeError):
    """The processes of a multi-process run cannot reach each other or disagree."""


class ModelError(UserError, ValueError):
    """An exported model folder that is missing a file or does not fit its own config."""


class Preempted(Exception):
    """Training stopped early by SIGTERM, its state saved; not an error of the user's and
    not a result: `hierjax.main` exits 0 (a scheduler requeues the job and the same
    command resumes), and a caller of `train_and_evaluate` (e.g. a sweep) must not take
    the metrics of the stopped run for the finished run's."""

    def __init__(self, step: int):
        super().__init__(f"training stopped by SIGTERM at step {step}; its checkpoint is "
                         "saved: run the same command again to resume")
        self.step = step


class Diverged(FloatingPointError):
    """Training reached a non-finite loss, gradient norm or parameter at `step`; nothing
    from that step on was saved. Not a bug and not the user's input alone (a learning
    rate too high for this model): `hierjax.main` exits 1 with the message, and a sweep
    records the run as diverged and goes on."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step
