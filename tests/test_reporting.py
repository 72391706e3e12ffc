import glob
import io
import json
import os
import struct
import time

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event

from hierjax.reporting import MetricWriter, ProgressBar, summary_table


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(directory):
    """Decodes every tfevents record under `directory`, checking the framing and CRCs."""
    events = []
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            blob = f.read()
        pos = 0
        while pos < len(blob):
            header = blob[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", blob[pos + 8 : pos + 12])
            data = blob[pos + 12 : pos + 12 + length]
            (data_crc,) = struct.unpack("<I", blob[pos + 12 + length : pos + 16 + length])
            assert header_crc == masked_crc(header) and data_crc == masked_crc(data)
            events.append(Event.FromString(data))
            pos += 16 + length
    return events


def scalars_of(events):
    return {
        (value.tag, event.step): value.simple_value
        for event in events
        for value in event.summary.value
    }


def test_metrics_jsonl_and_tensorboard(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write(10, {"loss": jnp.asarray(1.5), "lr": np.float32(0.1)}, split="train")
        writer.write(20, {"loss": 1.25, "lr": 0.05, "images": np.int64(2048)}, split="train")
        writer.write(20, {"top1/0": jnp.float32(0.75)}, split="eval")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == [
        {"step": 10, "split": "train", "loss": 1.5, "lr": pytest.approx(0.1)},
        {"step": 20, "split": "train", "loss": 1.25, "lr": 0.05, "images": 2048},
        {"step": 20, "split": "eval", "top1/0": 0.75},
    ]
    assert isinstance(records[1]["images"], int)

    train = scalars_of(read_events(tmp_path / "tensorboard" / "train"))
    assert train == {
        ("loss", 10): 1.5,
        ("lr", 10): pytest.approx(0.1),
        ("loss", 20): 1.25,
        ("lr", 20): pytest.approx(0.05),
        ("images", 20): 2048.0,
    }
    assert scalars_of(read_events(tmp_path / "tensorboard" / "eval")) == {("top1/0", 20): 0.75}


def test_resume_drops_the_rows_after_the_checkpoint_and_a_partial_line(tmp_path):
    with MetricWriter(tmp_path) as writer:
        for step in (1, 2, 3):
            writer.write(step, {"loss": 4.0 - step})
        writer.write(2, {"top1/0": 0.5}, split="eval")
    # The previous job died in the middle of a line, after its checkpoint at step 2.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "spl')
    with MetricWriter(tmp_path, resumed_at=2) as writer:
        writer.write(3, {"loss": 0.5})

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "split": "train", "loss": 3.0},
        {"step": 2, "split": "train", "loss": 2.0},
        {"step": 2, "split": "eval", "top1/0": 0.5},
        {"step": 3, "split": "train", "loss": 0.5}]
    events = read_events(tmp_path / "tensorboard" / "train")
    # TensorBoard is told to drop the earlier run's points from step 3 on.
    assert any(e.session_log.status == e.session_log.START and e.step == 3 for e in events)


def test_writer_rejects_non_scalars_and_reserved_names(tmp_path):
    with MetricWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="'loss' must be a scalar"):
            writer.write(1, {"loss": np.ones(3)})
        with pytest.raises(ValueError, match="reserved"):
            writer.write(1, {"step": 3})


def test_progress_bar_plain_lines_when_not_a_tty():
    stream = io.StringIO()
    bar = ProgressBar(100, initial_step=10, images_per_step=256, every_s=0, stream=stream)
    for step in range(11, 15):
        time.sleep(0.01)
        bar.update(step, {"loss": jnp.asarray(0.123456), "lr": 1e-3})
    bar.close()

    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # The first update only starts the clocks; each later one prints a line.
    assert len(lines) == 3 + 1
    assert lines[0].startswith("step 12/100 | ")
    for line in lines:
        assert "img/s" in line and "? img/s" not in line
        assert "ETA 0:" in line and "elapsed 0:00:0" in line
        assert "loss 0.1235" in line and "lr 0.001" in line


def test_progress_bar_redraws_in_place_on_a_tty():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = ProgressBar(10, images_per_step=8, every_s=0, stream=stream)
    bar.update(1, {"loss": 1.0})
    time.sleep(0.01)
    bar.update(2)
    bar.close()
    out = stream.getvalue()
    assert out.count("\n") == 1  # at close
    assert out.startswith("\rstep 2/10 | ")


def test_progress_bar_slow_interval_prints_nothing_between():
    stream = io.StringIO()
    bar = ProgressBar(1000, images_per_step=1, stream=stream)  # not a TTY: every 60 s
    for step in range(1, 50):
        bar.update(step, {"loss": 1.0})
    assert stream.getvalue() == ""
    bar.close()
    assert stream.getvalue().startswith("step 49/1000 | ")


def test_summary_table():
    table = summary_table(
        {
            "train": {"top1/0": 0.91234, "top1/1": 0.95, "count": 5000},
            "eval": {"top1/0": np.float32(0.5), "mistake_severity": jnp.asarray(1.75)},
        }
    )
    assert table.splitlines() == [
        "       top1/0  top1/1  count  mistake_severity",
        "-----  ------  ------  -----  ----------------",
        "train  0.9123  0.9500   5000                 -",
        "eval   0.5000       -      -            1.7500",
    ]
