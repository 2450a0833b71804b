"""`python -m effgan`: variants, data, train and translate, driven through `main()`."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from effgan.cli import main


def test_variants_json_lists_every_generator_and_the_discriminator(capsys):
    assert main(["variants", "--size", "64", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["patchgan"]["kind"] == "discriminator"
    assert {"resnet", "efficientnet_b3_full", "efficientnet_split_v2", "effgan_b3"} <= set(rows)
    for row in rows.values():
        assert row["trainable_params"] > 0 and row["total_params"] >= row["trainable_params"]
        assert row["flops"] > 0


def test_variants_table_flags_sizes_a_generator_cannot_take(capsys):
    assert main(["variants", "--size", "48"]) == 0
    out = capsys.readouterr().out
    assert "needs a multiple of 32" in out and "resnet" in out


def test_train_then_translate(tmp_path: Path, capsys):
    data = tmp_path / "cans"
    assert main(["data", "cans", "--out", str(data), "--count", "6", "--size", "32"]) == 0
    assert len(list((data / "trainA").glob("*.png"))) == 6
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--size", "32", "--epochs", "2", "--steps", "2"]
    assert main([*args, "--option", "n_blocks=1", "--out", str(out)]) == 0
    assert (out / "losses.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "epoch-0001.png",
        "epoch-0002.png",
    ]
    assert (out / "checkpoints" / "epoch-0002" / "ckpt.index").exists()
    translated = tmp_path / "translated"
    assert main(["translate", "--checkpoint", str(out), "--input", str(data / "testA"),
                 "--out", str(translated)]) == 0  # fmt: skip
    outputs = sorted(translated.glob("*_ab.png"))
    assert len(outputs) == len(list((data / "testA").glob("*.png")))
    assert Image.open(outputs[0]).size == (32, 32)


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path: Path, capsys):
    assert main(["train", "--generator", "nope", "--out", str(tmp_path)]) == 2
    assert "known:" in capsys.readouterr().err
    assert main(["train", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert main(["translate", "--checkpoint", str(tmp_path), "--input", ".", "--out", "x"]) == 2
