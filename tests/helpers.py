"""Shared test configs: a tiny model on tiny synthetic images, seconds per step on CPU."""

from hierjax import settings


def tiny_config(**overrides):
    """WRN-10-1 on 8x8 synthetic images, batch 16; dotted-key overrides."""
    config = settings.base_config()
    config.data.name = "synthetic"
    config.data.image_size = 8
    config.data.synthetic_num_fine = 8
    config.data.synthetic_num_coarse = 2
    config.data.synthetic_train_size = 256
    config.data.synthetic_test_size = 37  # not a multiple of the batch: padding is tested
    config.model.name = "wrn"
    config.model.wrn_depth = 10
    config.model.wrn_width = 1
    config.batch_size = 16
    config.num_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    config.async_checkpoints = False
    # A constant learning rate, so a run stopped at N steps and resumed to 2N follows
    # the same schedule as an uninterrupted 2N-step run.
    config.optimizer.lr = 0.05
    config.optimizer.schedule = "step"
    config.optimizer.decay_epochs = ()
    config.optimizer.warmup_epochs = 0.0
    return settings.set_keys(config, overrides)


def tiny_settings(**overrides) -> settings.Settings:
    return settings.resolve(tiny_config(**overrides))
