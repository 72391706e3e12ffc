"""After training: the validation split, evaluate, export, predict (and hierjax.Classifier).

One tiny run (module fixture) is trained once, with a held-out validation split and the
marginal decode in its evaluations, and every command works on it.
"""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import hierjax
from hierjax import data, evaluate, export, predict, restore, settings, train
from hierjax import workdir as workdir_lib
from hierjax.data.sources import shard
from hierjax.data.val_split import val_indices
from hierjax.errors import WorkdirError
from hierjax.inference import Classifier
from hierjax.train_step import normalize
from helpers import tiny_config, tiny_settings

# Cascaded heads (so every decode applies), a quarter of the training set held out.
RUN = {"variant": "CSM", "data.val_fraction": 0.25, "eval.decode": "marginal",
       "num_steps": 2, "eval_every_steps": 1, "checkpoint_every_steps": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, the run's returned final metrics)."""
    workdir = tmp_path_factory.mktemp("run")
    return workdir, train.train_and_evaluate(tiny_config(**RUN), workdir)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "model"
    export.main(["--workdir", str(run[0]), "--checkpoint", "latest", "--out", str(out)])
    return out


def test_training_validates_on_val_and_reports_test_at_the_end(run):
    workdir, final = run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in val] == [1, 2]
    assert [r["step"] for r in rows if r["split"] == "test"] == [2]
    assert not [r for r in rows if r["split"] == "eval"]
    test = next(r for r in rows if r["split"] == "test")
    assert final == pytest.approx({**{k: v for k, v in test.items() if k != "split"}})
    assert final["count"] == 37
    assert val[0]["count"] == len(data.build_splits(tiny_settings(**RUN).data).val) > 50
    assert "marginal/top1/0" in final  # config.eval.decode
    # The best checkpoint is the one with the best validation score of that decode.
    best = restore.restore(workdir, "best").step
    assert best == max(val, key=lambda r: r["marginal/top1/0"])["step"]


def test_evaluate_reproduces_the_final_metrics_and_writes_the_report(run, capsys):
    workdir, final = run
    with workdir_lib.lock(workdir):  # as if the run were still training: no lock needed
        evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest", "--split", "test"])
    out = workdir / "eval" / "latest-test"
    got = json.loads((out / "metrics.json").read_text())
    assert got == final  # every rate, exactly, and the step
    printed = capsys.readouterr().out
    assert "examples of the test split ('test')" in printed and "top-1 marginal decode" in printed
    assert (out / "table.txt").read_text().strip() in printed
    with open(out / "per_class_0_fine.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and sum(int(r["support"]) for r in table) == 37
    assert {"fine", "coarse", "support", "top1", "top5", "confused_with"} <= set(table[0])
    for name in ("confusion_0_fine.png", "confusion_1_coarse.png", "severity.png",
                 "per_class_1_coarse.csv"):
        assert (out / name).stat().st_size > 0, name


def test_export_load_predict_gives_the_training_models_logits(run, exported):
    workdir, _ = run
    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json", "hierarchy.csv", "model.safetensors", "preprocessing.json"]
    clf = hierjax.Classifier.load(exported)
    assert hierjax.Classifier is Classifier
    s = tiny_settings(**RUN)
    test = data.build_splits(s.data).test
    images = np.stack([test[i]["image"] for i in range(20)])
    # The training-time model: the run's context, its last checkpoint's variables.
    ctx = train.build_context(s, test.hierarchy, total_steps=2, steps_per_epoch=12)
    trained = restore.restore(workdir, "latest")
    want = ctx.model.apply(trained.variables, normalize(images, ctx.mean, ctx.std),
                           train=False)
    got = clf.logits(images)
    assert len(got) == 2
    for g, w in zip(got, want["logits"]):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-5)
    preds = clf.predict(images, top_k=3, decode="joint")
    fine, coarse = preds["fine"], preds["coarse"]
    assert np.asarray(fine.probs).shape == (20, 3) and np.asarray(coarse.probs).shape == (20, 2)
    h = test.hierarchy
    for f, c in zip(fine.label, coarse.label):  # decoded levels form a tree path
        assert h.class_names[1][h.ancestors[h.class_names[0].index(f), 1]] == c
    np.testing.assert_allclose(coarse.probs.sum(1), 1.0, rtol=1e-5)


def test_evaluate_an_exported_model(run, exported, capsys):
    evaluate.main(["--model", str(exported), "--no_plots"])
    got = json.loads((exported / "eval" / "model-test" / "metrics.json").read_text())
    assert got == run[1]


def test_predict_lists_unreadable_files_and_predicts_the_rest(run, exported, tmp_path, capsys):
    test = data.build_splits(tiny_settings(**RUN).data).test
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    images = [test[i]["image"] for i in range(3)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    Image.fromarray(images[0]).resize((24, 20)).save(folder / "sub" / "larger.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "preds.csv"
    predict.main(["--model", str(exported), str(folder), "--out", str(out), "--top_k", "2"])
    assert "Wrote 4 predictions" in capsys.readouterr().out
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["file"].removeprefix(str(folder) + "/") for r in rows] == [
        "0.png", "1.png", "2.png", "broken.png", "sub/larger.jpg"]
    broken = rows[3]
    assert broken["error"] and not broken["fine"]
    assert all(not r["error"] and r["fine"] and r["coarse_top2"] for i, r in enumerate(rows)
               if i != 3)
    # The same predictions as the Python API on the arrays (the PNGs are lossless).
    api = Classifier.load(exported).predict(np.stack(images), top_k=2)
    assert [r["fine"] for r in rows[:3]] == api["fine"].label
    np.testing.assert_allclose([float(r["fine_top1_prob"]) for r in rows[:3]],
                               api["fine"].probs[:, 0], rtol=1e-5)


@pytest.mark.parametrize("command, args, message", [
    (evaluate.main, ["--workdir", "{tmp}"], "holds no config.json, so it is no hierjax workdir"),
    (predict.main, ["--model", "{tmp}", "{tmp}", "--out", "{tmp}/p.csv"],
     "lacks model.safetensors, config.json, hierarchy.csv"),
    (export.main, ["--workdir", "{run}", "--checkpoint", "7", "--out", "{tmp}/m"],
     "has no checkpoint of step 7; kept steps: [1, 2]"),
])
def test_user_errors_print_their_message_alone_and_exit_2(run, tmp_path, capsys, command,
                                                          args, message):
    with pytest.raises(SystemExit) as exit_info:
        command([a.format(tmp=tmp_path, run=run[0]) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_val_split_is_disjoint_stratified_and_the_same_for_any_workers_or_processes():
    s = tiny_settings(**{"data.val_fraction": 0.2})
    raw, _ = data.build_sources(tiny_settings().data)  # the whole training split
    splits = data.build_splits(s.data)
    train_idx, val_idx = splits.train.indices, splits.val.indices
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    assert np.array_equal(np.union1d(train_idx, val_idx), np.arange(len(raw)))
    fine = raw.labels_Nxh[:, 0]
    counts = np.bincount(fine)
    np.testing.assert_array_equal(np.bincount(fine[val_idx], minlength=8),
                                  np.clip(np.round(0.2 * counts), 1, counts - 1))
    # Independent of the seed and the worker count...
    for other in ({"seed": 3}, {"data.num_workers": 2}):
        again = data.build_splits(tiny_settings(**{"data.val_fraction": 0.2, **other}).data)
        assert np.array_equal(again.val.indices, val_idx)
    # ...and of the process count: computed before sharding, each process evaluates its
    # shard of the same validation split, and the shards add up to it.
    for processes in (2, 3):
        shards = [data.build_input(s, num_devices=1, process_index=p,
                                   num_processes=processes).eval.source
                  for p in range(processes)]
        names = [shard(splits.val, p, processes)[0]["name"] for p in range(processes)]
        assert [x[0]["name"] for x in shards] == names
        assert sum(len(x) for x in shards) == len(val_idx)
        assert np.array_equal(np.concatenate([x.labels_Nxh for x in shards]),
                              splits.val.labels_Nxh)
    # k_c = round(f n_c), at least 1, at most n_c - 1: a single example stays in training.
    labels = np.array([0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    train_only, val_only = val_indices(labels, 0.25)
    np.testing.assert_array_equal(np.bincount(labels[val_only], minlength=4), [0, 1, 1, 2])
    assert 0 in train_only and len(train_only) + len(val_only) == len(labels)


@pytest.mark.parametrize("overrides, message", [
    ({"data.name": "cub", "data.val_fraction": 0.1, "data.val_split": "val"},
     "both give a validation split"),
    ({"data.val_split": "val"}, "has no validation split of its own"),
    ({"variant": "SM", "eval.decode": "joint"}, "has a flat softmax head"),
])
def test_validation_and_decode_keys_are_checked(overrides, message):
    with pytest.raises(settings.ConfigError, match=message):
        tiny_settings(**overrides)


def test_a_run_written_before_the_new_keys_resumes(tmp_path):
    """config.json of an older run lacks data.val_fraction, data.val_split and
    eval.decode: they had their defaults then, so resuming is no config change."""
    s = tiny_settings()
    old = {k: v for k, v in settings.to_dict(s).items()
           if k not in ("data.val_fraction", "data.val_split", "eval.decode")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    workdir_lib.check_config(tmp_path, s, resuming=True)
    assert not (tmp_path / workdir_lib.CHANGES_FILE).exists()
    with pytest.raises(WorkdirError, match="data.val_fraction: 0.0 -> 0.1"):
        workdir_lib.check_config(tmp_path, tiny_settings(**{"data.val_fraction": 0.1}),
                                 resuming=True)
