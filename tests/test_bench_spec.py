"""Spec loading and grid expansion: what is checked at load time, and stable run keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.spec import (
    RunSpec,
    SpecError,
    confined,
    expand,
    known_specs,
    load_spec,
    select,
)
from bench.worker import faults


def test_shipped_specs_load() -> None:
    assert {"quick", "thesis", "ablation"} <= set(known_specs())
    quick = expand(load_spec("quick"))
    gens = {r.config.generator for r in quick}
    assert gens == {
        "resnet",
        "efficientnet_b3_full",
        "efficientnet_split_v1",
        "efficientnet_split_v2",
        "mobile_resnet",
        "effgan_b0",
    }
    assert len(quick) == 12 and {r.config.seed for r in quick} == {0, 1}
    assert all(r.config.image_size == 64 and r.data.source == "cans" for r in quick)
    thesis = expand(load_spec("thesis"))
    assert len(thesis) == 4 and all(r.config.image_size == 256 and r.fid for r in thesis)
    assert all(r.config.epochs == 40 and r.config.batch_size == 1 for r in thesis)
    ablation = expand(load_spec("ablation"))
    blocks = {r.config.generator_options["n_blocks"] for r in ablation if r.variant == "split_v1"}
    assert blocks == {1, 3, 5}
    assert {r.config.precision for r in ablation} == {"float32", "mixed_bfloat16"}
    assert {r.config.loss for r in ablation} == {"bce", "lsgan"}
    assert {r.config.generator_options["upsampling"] for r in ablation} == {
        "transpose",
        "resize_conv",
    }


def test_grid_expansion(write_spec) -> None:
    path = write_spec(
        "grid",
        [
            {
                "generator": "resnet",
                "axes": {"n_blocks": [1, 2, 3], "upsampling": ["transpose", "resize_conv"]},
            },
            {"generator": "effgan_b0"},
        ],
        train={"seeds": [0, 1]},
        axes={"precision": ["float32", "mixed_bfloat16"]},
    )
    runs = expand(load_spec(path))
    assert len(runs) == 3 * 2 * 2 * 2 + 2 * 2
    assert len({r.key for r in runs}) == len(runs)
    labels = {r.label for r in runs if r.config.generator == "resnet"}
    assert "resnet[precision=float32,n_blocks=1,upsampling=transpose]" in labels
    r = next(
        r
        for r in runs
        if r.axes == {"precision": "mixed_bfloat16", "n_blocks": 3, "upsampling": "resize_conv"}
    )
    assert r.config.precision == "mixed_bfloat16"
    assert r.config.generator_options["n_blocks"] == 3
    assert r.config.generator_options["filters"] == 64  # registry default, resolved


def test_keys_are_stable(write_spec) -> None:
    a = expand(load_spec(write_spec("a", [{"generator": "resnet"}], train={"seeds": [0, 1]})))
    again = expand(load_spec(write_spec("a", [{"generator": "resnet"}], train={"seeds": [0, 1]})))
    explicit = expand(
        load_spec(
            write_spec(
                "b",
                [{"generator": "resnet", "n_blocks": 9, "upsampling": "transpose"}],
                train={"seeds": [0, 1], "learning_rate": 0.0002},
            )
        )
    )
    assert [r.key for r in a] == [r.key for r in again] == [r.key for r in explicit]
    assert a[0].key != a[1].key  # another seed, another run
    assert len(a[0].key) == 12 and int(a[0].key, 16) >= 0
    other = expand(load_spec(write_spec("c", [{"generator": "resnet", "n_blocks": 3}])))
    assert other[0].key != a[0].key
    # timeout and evaluation settings do not change what is trained
    slow = expand(load_spec(write_spec("d", [{"generator": "resnet"}], train={"timeout_s": 5})))
    assert slow[0].key == a[0].key


def test_runspec_round_trips_through_json(tiny_spec: Path) -> None:
    (run, _) = expand(load_spec(tiny_spec))
    back = RunSpec.from_dict(json.loads(json.dumps(run.to_dict())))
    assert back == run and back.name == f"resnet-{run.key}"


def test_unknown_spec_lists_known() -> None:
    with pytest.raises(SpecError, match="unknown spec 'nope'.*quick"):
        load_spec("nope")


def test_unknown_generator_lists_known(write_spec) -> None:
    with pytest.raises(
        SpecError, match=r"variants\[1\].*unknown generator 'resnot'.*mobile_resnet"
    ):
        load_spec(write_spec("x", [{"generator": "resnot"}]))


def test_unknown_option_names_key_and_what_is_taken(write_spec) -> None:
    with pytest.raises(SpecError, match=r"unknown key 'n_blokcs'.*n_blocks"):
        load_spec(write_spec("x", [{"generator": "resnet", "n_blokcs": 3}]))
    # an option this generator does not take, also as an axis
    with pytest.raises(SpecError, match=r"effgan_b0.*unknown key 'n_blocks'"):
        load_spec(write_spec("x", [{"generator": "effgan_b0", "axes": {"n_blocks": [1, 2]}}]))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"train": {"epoch": 3}}, r"unknown key 'epoch' in \[train\]"),
        ({"data": {"size": 32}}, r"unknown key 'size' in \[data\]"),
        ({"train": {"epochs": "three"}}, r"epochs must be int"),
        ({"train": {"loss": "wgan"}}, r"unknown loss 'wgan'"),
        ({"train": {"precision": "fp8"}}, r"unknown precision 'fp8'"),
        ({"train": {"batch_size": 0}}, r"batch_size must be a positive integer"),
        ({"data": {"source": "no/such/folder"}}, r"source.*does not exist"),
    ],
)
def test_bad_values_name_the_key(write_spec, kwargs, pattern) -> None:
    with pytest.raises(SpecError, match=pattern):
        load_spec(write_spec("x", [{"generator": "resnet"}], **kwargs))


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\nvariant = 1\n[[variants]]\ngenerator = "resnet"\n')
    with pytest.raises(SpecError, match="unknown key 'variant' in top level"):
        load_spec(path)


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\n[train]\nepochs = = 3\n')
    with pytest.raises(SpecError, match=r"broken\.toml: malformed TOML.*line 3"):
        load_spec(path)


def test_rejected_values_are_left_to_the_run(write_spec) -> None:
    """n_blocks = 0 or a size B3 cannot take are the generator's call: not a load error."""
    spec = load_spec(
        write_spec(
            "x",
            [
                {"generator": "resnet", "axes": {"n_blocks": [0, 1]}},
                {"generator": "efficientnet_b3_full", "image_size": 48},
            ],
        )
    )
    assert len(expand(spec)) == 3


def test_duplicate_runs_are_refused(write_spec) -> None:
    with pytest.raises(SpecError, match="same run"):
        load_spec(
            write_spec(
                "x",
                [{"generator": "resnet"}, {"generator": "resnet", "n_blocks": 9, "label": "r9"}],
            )
        )


def test_paths_are_confined(tmp_path: Path, write_spec) -> None:
    assert confined(tmp_path, "spec", "abc") == (tmp_path / "spec" / "abc").resolve()
    with pytest.raises(SpecError, match="outside"):
        confined(tmp_path, "..", "elsewhere")
    escape = tmp_path / "escape.toml"
    escape.write_text('name = "../up"\n[[variants]]\ngenerator = "resnet"\n')
    with pytest.raises(SpecError, match="name must be"):
        load_spec(escape)
    with pytest.raises(SpecError, match="weights.*does not exist"):
        load_spec(
            write_spec("w", [{"generator": "efficientnet_split_v1", "weights": "../nope.h5"}])
        )
    weights = tmp_path / "b3.weights.h5"
    weights.write_bytes(b"")
    (run,) = expand(
        load_spec(
            write_spec("w", [{"generator": "efficientnet_split_v1", "weights": "b3.weights.h5"}])
        )
    )
    assert run.config.generator_options["weights"] == str(weights.resolve())


def test_select_by_label_generator_or_key(write_spec) -> None:
    runs = expand(
        load_spec(
            write_spec(
                "x", [{"generator": "resnet"}, {"generator": "mobile_resnet", "label": "mob"}]
            )
        )
    )
    assert [r.label for r in select(runs, ["mob"])] == ["mob"]
    assert [r.label for r in select(runs, ["mobile_resnet"])] == ["mob"]
    assert [r.label for r in select(runs, [runs[0].key[:6]])] == ["resnet"]
    with pytest.raises(SpecError, match="matches no run"):
        select(runs, ["nothing"])


def test_fault_injection_is_targeted(tiny_spec: Path, monkeypatch) -> None:
    resnet, mobile = expand(load_spec(tiny_spec))
    monkeypatch.setenv("EFFGAN_FAULT_INJECT", "oom@mobile_resnet,sleep=2")
    assert faults(resnet) == {"sleep": "2"}
    assert faults(mobile) == {"oom": "", "sleep": "2"}
