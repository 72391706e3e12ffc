"""Every config file loads and validates; arguments, variants and overrides behave."""

import importlib.util
import pathlib

import pytest

from hierjax import config_lib

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", [None, "runlocal", "runlocal,variant=SM"])
def test_config_loads_and_validates(path, arg):
    config = config_lib.validate(load(path).get_config(arg))
    if arg and "runlocal" in arg:
        assert config.num_steps > 0 and config.batch_size <= 32
    if arg and "variant=SM" in arg:
        assert config.model.heads == "flat" and config.loss.glm_weight == 0


def test_expected_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"default", "cifar100_resnet18", "cifar100_wrn", "cub_resnet50",
            "cars_resnet50", "aircraft_resnet50", "dogs_resnet50", "nabirds_resnet50"} <= names


@pytest.mark.parametrize("variant,heads,skip,glm,coarse", [
    ("SM", "flat", False, False, False), ("SM-GLM", "flat", False, True, False),
    ("CSM", "cascade", False, False, False), ("CSM-GLM", "cascade", False, True, False),
    ("SC-CSM", "cascade", True, False, False), ("OURS", "cascade", True, True, False),
    ("CC", "flat", False, False, True), ("OURS+CC", "cascade", True, True, True)])
def test_variants_set_the_four_keys(variant, heads, skip, glm, coarse):
    config = config_lib.apply_variant(config_lib.base_config(), variant)
    assert (config.model.heads, config.model.skip) == (heads, skip)
    assert (config.loss.glm_weight > 0) == glm and (config.loss.coarse_weight > 0) == coarse


def test_bad_arguments_and_values_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown config argument 'runlokal'"):
        config_lib.parse_arg("runlokal", runlocal=False)
    with pytest.raises(ValueError, match="Unknown variant 'OUR'"):
        config_lib.apply_variant(config_lib.base_config(), "OUR")
    config = config_lib.base_config()
    config.model.heads = "tree"
    with pytest.raises(ValueError, match=r"config.model.heads = 'tree'"):
        config_lib.validate(config)
    config = config_lib.base_config()
    config.batch_size = 0
    with pytest.raises(ValueError, match="config.batch_size must be > 0"):
        config_lib.validate(config)
    with pytest.raises(AttributeError):
        config_lib.base_config().loss.glm_lamda  # typos are not silently new keys


def test_parse_arg_types():
    args = config_lib.parse_arg("runlocal,depth=16,variant=SM", runlocal=False, depth=28,
                                variant="OURS")
    assert args.runlocal is True and args.depth == 16 and args.variant == "SM"
