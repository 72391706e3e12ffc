"""The benchmark's per-class-pair loop baseline computes the same loss as glm_loss."""

import functools
import os

import jax
import numpy as np

from hierjax import glm_loss
from hierjax.benchmarks import common
from hierjax.benchmarks.glm_loop import glm_loss_and_grad_loop
from hierjax.benchmarks.losses import make_batch


def test_loop_baseline_matches_glm_loss():
    features, labels = make_batch(48, 6, 20, seed=3)
    kw = dict(k=4, margins=(3.0, 1.0, 2.0))
    loss, grad = jax.value_and_grad(functools.partial(glm_loss, **kw))(features, labels)
    loop_loss, loop_grad = glm_loss_and_grad_loop(features, labels, **kw)
    assert loop_loss > 0
    np.testing.assert_allclose(loss, loop_loss, rtol=1e-4)
    np.testing.assert_allclose(grad, loop_grad, rtol=1e-3, atol=1e-5)


def test_write_section_replaces_only_its_block(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# title\n\nintro\n")
    common.write_section("a", "first", path)
    common.write_section("b", "other", path)
    common.write_section("a", "second", path)
    text = path.read_text()
    assert text.count("<!-- begin a -->") == 1 and "second" in text and "first" not in text
    assert "other" in text and text.startswith("# title\n\nintro\n")


def test_pipeline_benchmark_runs(capsys):
    from hierjax.benchmarks import pipeline

    pipeline.main(["--quick", "--workers=0", "--images=32"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 |")]
    train_rate, per_worker, eval_rate = (float(x) for x in rows[-1].strip("| ").split(" | ")[1:])
    assert train_rate > 0 and per_worker == train_rate and eval_rate > 0


def test_gpu_table_command_runs_end_to_end_on_cpu(tmp_path, capsys):
    """`python -m hierjax.benchmarks.gpu` at tiny sizes: every section measures and the
    table lands in the file, so the command is ready for the first GPU."""
    from hierjax.benchmarks import gpu

    output = tmp_path / "BENCHMARKS.md"
    # No time budget: on a loaded CI machine a tiny run can outlast the default one.
    gpu.main(["--tiny", "--budget_s=1e9", f"--output={output}"])
    text = output.read_text()
    assert "<!-- begin gpu-cpu -->" in text and "Skipped" not in text
    for row in ("| WRN-10-1 | 8 | 4 | SM |", "| WRN-10-1 | 8 | 4 | OURS |", "| 128 | 2048 | 200 |",
                "| `hierjax.main`, steady state |", "| bare pmapped train step |"):
        assert row in text, text
    pipeline_row = next(line for line in text.splitlines()
                        if line.startswith(f"| {os.cpu_count()} |"))
    assert float(pipeline_row.split("|")[2].replace(",", "")) > 0


def test_peak_flops_table():
    from hierjax.benchmarks.gpu import peak_flops

    kind = lambda k: type("Device", (), {"device_kind": k})()  # noqa: E731
    assert peak_flops(kind("NVIDIA H100 80GB HBM3")) == 989e12
    assert peak_flops(kind("NVIDIA H100 PCIe")) == 756e12
    assert peak_flops(kind("cpu")) is None


def test_confidence_intervals_against_a_hand_worked_case():
    from hierjax.benchmarks.stats import mean_ci, paired_gain, significant

    # mean 2, sample sd 1, n = 3: t_{0.975, 2} = 4.302653, half = 4.302653 / sqrt(3).
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(half - 4.302653 / 3 ** 0.5) < 1e-5
    gain, half = paired_gain([2.0, 3.0, 4.5], [1.0, 2.0, 3.0])  # differences 1, 1, 1.5
    assert abs(gain - 7 / 6) < 1e-12 and significant(gain, half)
    assert not significant(*paired_gain([1.0, 3.0], [2.0, 2.0]))
