"""Every key validated once into Settings; variants resolved after the command line;
config files load; the resolved config round-trips through config.json."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from hierjax import recipes, settings
from hierjax.settings import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved_by_main(*flags):
    """The settings hierjax.main resolves from these flags: the real absl/config_flags
    parsing, in a fresh process (flags parse once per process)."""
    code = ("import sys, json\n"
            "from absl import app\n"
            "from hierjax import main, settings\n"
            "def run(argv):\n"
            "    print('RESOLVED ' + json.dumps(settings.to_dict(main.resolved_settings())))\n"
            "app.run(run, argv=['main', *sys.argv[1:]], flags_parser=main._parse_flags)\n")
    out = subprocess.run([sys.executable, "-c", code, "--workdir=/unused", *flags], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    for line in out.stdout.splitlines():
        if line.startswith("RESOLVED "):
            return json.loads(line[len("RESOLVED "):]), out
    return None, out


# --- the variant and its weights, through the real command line ------------------------

def test_glm_weight_override_applies_on_a_glm_variant():
    values, out = resolved_by_main("--config=configs/cifar100_wrn.py:variant=OURS",
                                   "--config.loss.glm_weight=0.4")
    assert values["loss.glm_weight"] == 0.4, out.stderr[-2000:]
    assert values["variant"] == "OURS" and values["loss.coarse_weight"] == 0.0


def test_coarse_weight_override_applies_on_cc():
    values, out = resolved_by_main("--config=configs/cifar100_wrn.py:variant=CC",
                                   "--config.loss.coarse_weight=2")
    assert values["loss.coarse_weight"] == 2.0 and values["loss.glm_weight"] == 0.0, out.stderr


def test_variant_key_override_is_resolved_after_the_file():
    values, _ = resolved_by_main("--config=configs/default.py", "--config.variant=SM-GLM")
    assert values["variant"] == "SM-GLM" and values["loss.glm_weight"] == 0.05


@pytest.mark.parametrize("flags, message", [
    (("--config=configs/cifar100_wrn.py:variant=SM", "--config.loss.glm_weight=0.5"),
     "config.loss.glm_weight = 0.5 contradicts config.variant = 'SM'"),
    (("--config=configs/cifar100_wrn.py:variant=OURS", "--config.loss.glm_weight=0"),
     "config.loss.glm_weight = 0 contradicts config.variant = 'OURS'"),
    (("--config=configs/default.py", "--config.variant=SM", "--config.loss.coarse_weight=1"),
     "config.loss.coarse_weight = 1.0 contradicts config.variant = 'SM'"),
    (("--config=configs/default.py", "--config.loss.glm_lamda=0.4"),
     "config.loss.glm_lamda is not a config key"),
    (("--config=configs/default.py", "--config.model.nmae=wrn"),
     "did you mean config.model.name"),
    (("--config=configs/default.py:runlokal",), "unknown config argument 'runlokal'"),
    (("--config=configs/default.py", "--config.data.sampler=pqk"),
     "config.data.sampler = 'pqk' is not valid; choose one of 'shuffle', 'hierarchical'"),
])
def test_command_line_errors_are_one_short_message(flags, message):
    values, out = resolved_by_main(*flags)
    assert values is None and out.returncode == 2, out.stdout
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 3, out.stderr


def test_unset_weight_takes_the_documented_default():
    base = settings.base_config()
    assert settings.resolve(base).loss.glm_weight == settings.GLM_WEIGHT_FROM_SCRATCH == 0.05
    settings.set_keys(base, {"model.pretrained": "resnet50.safetensors"})
    assert settings.resolve(base).loss.glm_weight == settings.GLM_WEIGHT_PRETRAINED == 0.8
    settings.set_keys(base, {"variant": "OURS+CC"})
    assert settings.resolve(base).loss.coarse_weight == settings.COARSE_WEIGHT == 1.0


@pytest.mark.parametrize("variant", [*settings.VARIANT_NAMES, "CSM+CC", "SC-CSM-GLM+CC"])
def test_each_variant_trains_the_heads_and_terms_its_name_says(variant):
    """What the name says (Shi, Gong et al.'s table: SM flat softmax, CSM cascaded heads,
    SC-CSM cascade with skip connections, -GLM / OURS the GLM term, CC / +CC the coarse
    constraint), read off the model and the loss a train step builds, not off the table."""
    import jax
    import numpy as np

    from hierjax import data, train
    from hierjax.train_step import compute_loss
    from helpers import tiny_settings

    s = tiny_settings(variant=variant)
    source, _ = data.build_sources(s.data)
    ctx = train.build_context(s, source.hierarchy, total_steps=1, steps_per_epoch=1,
                              axis_name=None)
    images = np.zeros((4, 8, 8, 3), np.float32)
    variables = ctx.model.init(jax.random.key(0), images, train=False)
    outputs = ctx.model.apply(variables, images, train=False)
    labels = source.labels_Nxh[:4]
    _, parts = compute_loss(outputs, labels, ctx)
    cascade = "CSM" in variant or variant.startswith("OURS")
    heads = variables["params"]["heads"]
    assert len(outputs["logits"]) == (2 if cascade else 1)
    if cascade:  # coarse head input: the fine logits (8), plus the 64 features with skip
        skip = "SC-CSM" in variant or variant.startswith("OURS")
        assert heads["level1"]["kernel"].shape[0] == 8 + (64 if skip else 0)
    assert ("glm" in parts) == ("GLM" in variant or variant.startswith("OURS"))
    assert ("coarse" in parts) == ("CC" in variant.replace("CSM", ""))


@pytest.mark.parametrize("name", ["OUR", "CC+CC", "SM+GLM", "SM-CC", ""])
def test_unknown_variants(name):
    with pytest.raises(ConfigError, match="is not a variant; choose one of SM, SM-GLM"):
        settings.parse_variant(name)


# --- one validator -----------------------------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("batch_size", 0, r"config.batch_size = 0 must be >= 1"),
    ("keep_checkpoints", 0, r"config.keep_checkpoints = 0 must be >= 1"),
    ("model.name", "resnet152", r"config.model.name = 'resnet152' is not valid; choose one"),
    ("model.dtype", "float16", r"config.model.dtype = 'float16' is not valid"),
    ("model.dropout", 1.0, r"config.model.dropout = 1.0 must be < 1"),
    ("optimizer.lr", 0.0, r"config.optimizer.lr = 0.0 must be > 0"),
    ("optimizer.name", "lamb", r"config.optimizer.name = 'lamb' is not valid"),
    ("data.sampler_pqk", (4, 4), r"config.data.sampler_pqk = \(4, 4\) must have 3 entries"),
    ("data.min_scale", 0.0, r"config.data.min_scale = 0.0 must be > 0"),
    ("loss.glm_margins", (1.0, -1.0), r"config.loss.glm_margins = -1.0 must be >= 0"),
])
def test_bad_values_name_the_key(key, value, message):
    config = settings.base_config()
    with config.ignore_type():
        settings.set_keys(config, {key: value})
    with pytest.raises(ConfigError, match=message):
        settings.resolve(config)


def test_keys_that_constrain_each_other():
    for overrides, message in [
        ({"model.dropout": 0.3}, "applies to config.model.name = 'wrn' only"),
        ({"model.name": "wrn", "model.wrn_depth": 20}, "must be 6n \\+ 4"),
        ({"data.image_size": 64, "data.eval_resize": 32}, "eval_resize = 32 is smaller"),
        ({"num_epochs": 0}, "both 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            settings.resolve(settings.set_keys(settings.base_config(), overrides))


def test_unknown_keys_added_in_python_are_errors():
    config = settings.base_config()
    with config.unlocked():
        config.loss.glm_lambda = 0.4
    with pytest.raises(ConfigError, match="config.loss.glm_lambda is not a config key"):
        settings.resolve(config)
    with pytest.raises(ConfigError, match="config.optimizer.lrr is not a config key; did "
                                          "you mean config.optimizer.lr"):
        settings.set_keys(settings.base_config(), {"optimizer.lrr": 0.1})


def test_settings_are_frozen_and_round_trip_through_json(tmp_path):
    s = settings.resolve(settings.set_keys(settings.base_config(),
                                           {"variant": "OURS+CC", "loss.glm_weight": 0.3}))
    with pytest.raises(AttributeError):
        s.loss.glm_weight = 1.0  # noqa
    path = tmp_path / "config.json"
    settings.write_json(s, path)
    text = path.read_text()
    assert '"loss.glm_weight": 0.3' in text and text.count("\n") > 40  # one key a line
    assert settings.read_json(path) == s


def test_every_schema_key_is_documented_and_in_base_config():
    flat = settings.to_dict(settings.resolve(settings.base_config()))
    assert set(flat) == set(settings.schema())
    for dotted, field in settings.schema().items():
        assert field.metadata["doc"], dotted


def test_dataset_names_match_the_builders():
    from hierjax import prepare

    assert set(settings.PREPARED_DATASETS) | {"cifar100"} == set(prepare.BUILDERS)


# --- config files ------------------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", [None, "runlocal", "runlocal,variant=SM"])
def test_config_files_resolve(path, arg):
    config = load(path).get_config(arg)
    if config.model.pretrained == settings.PRETRAINED_REQUIRED:  # the fine-tuning recipes
        with pytest.raises(ConfigError, match="config.model.pretrained is not set: this "
                                              "config fine-tunes an ImageNet-pretrained"):
            settings.resolve(config)
        settings.set_keys(config, {"model.pretrained": "none"})  # from scratch, on purpose
    s = settings.resolve(config)
    assert s.model.pretrained == ""
    if arg and "runlocal" in arg:
        assert s.num_steps > 0 and s.batch_size <= 32
    if arg and "variant=SM" in arg:
        assert s.variant == "SM" and s.loss.glm_weight == 0


def test_expected_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"default", "cifar100_resnet18", "cifar100_wrn", "cub_resnet50",
            "cars_resnet50", "aircraft_resnet50", "dogs_resnet50", "nabirds_resnet50"} <= names


def test_parse_arg_types_and_errors():
    args = recipes.parse_arg("runlocal,depth=16,variant=SM", runlocal=False, depth=28,
                             variant="OURS")
    assert args.runlocal is True and args.depth == 16 and args.variant == "SM"
    with pytest.raises(ConfigError, match="unknown config argument 'runlokal'"):
        recipes.parse_arg("runlokal", runlocal=False)
