"""`python -m effgan`: list variants, render data, train a CycleGAN, translate images."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parse_value(text: str) -> Any:
    """Option values from the command line: JSON when it parses (numbers, bools), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--option takes KEY=VALUE (got {pair!r})")
        out[key] = _parse_value(value)
    return out


# ---- variants ------------------------------------------------------------------------
def cmd_variants(args: argparse.Namespace) -> int:
    from effgan.discriminator import build_discriminator
    from effgan.registry import build_generator, generator_entry, list_generators

    rows = []
    for name in list_generators():
        entry = generator_entry(name)
        if args.size % entry.size_multiple:
            rows.append(
                {
                    "name": name,
                    "kind": "generator",
                    "error": f"needs a multiple of {entry.size_multiple}",
                }
            )
            continue
        model = build_generator(name, args.size)
        rows.append(_variant_row(name, "generator", model, entry.description, entry.source))
    disc = build_discriminator(args.size)
    rows.append(
        _variant_row(
            "patchgan",
            "discriminator",
            disc,
            "PatchGAN discriminator",
            "Isola et al. 2017; thesis ch. 4.1",
        )
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from tabulate import tabulate

    table = [
        [r["name"], r["kind"], f"{r['trainable_params']:,}" if "trainable_params" in r else r["error"],
         f"{r.get('flops', 0) / 1e9:.2f}" if "flops" in r else "", r.get("description", "")]
        for r in rows
    ]  # fmt: skip
    print(f"Variants at {args.size}x{args.size} (FLOPs: forward pass, batch 1, multiply-add = 2)")
    print(tabulate(table, headers=["name", "kind", "trainable params", "GFLOPs", "description"]))
    return 0


def _variant_row(name, kind, model, description, source) -> dict[str, Any]:
    from effgan.flops import model_summary

    summary = model_summary(model)
    return {
        "name": name,
        "kind": kind,
        "trainable_params": summary["trainable_params"],
        "total_params": summary["total_params"],
        "flops": summary["flops"],
        "description": description,
        "source": source,
    }


# ---- data ----------------------------------------------------------------------------
def cmd_data(args: argparse.Namespace) -> int:
    from effgan.data.cans import write_cans_folder

    out = write_cans_folder(Path(args.out), count=args.count, size=args.size, seed=args.seed)
    print(f"wrote the cans data set in the CycleGAN layout to {out}")
    return 0


# ---- train ---------------------------------------------------------------------------
def _progress(epochs: int):
    """A one-line progress bar per epoch with running-mean losses and the last step time."""

    def show(epoch: int, step: int, total: int, losses: dict[str, float], dt: float) -> None:
        width = 24
        done = int(width * step / total) if total > 0 else 0
        bar = "#" * done + "-" * (width - done)
        print(
            f"\repoch {epoch}/{epochs} [{bar}] {step}/{total if total > 0 else '?'} "
            f"cycle {losses['cycle_loss_total']:.3f} G_AB {losses['gen_ab_loss_total']:.3f} "
            f"G_BA {losses['gen_ba_loss_total']:.3f} D_A {losses['disc_a_loss']:.3f} "
            f"D_B {losses['disc_b_loss']:.3f} step {dt:.3f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def cmd_train(args: argparse.Namespace) -> int:
    from effgan.data.load import load_data
    from effgan.data.pipeline import test_images
    from effgan.samples import sample_grid
    from effgan.train import LOSS_NAMES, CycleGAN, TrainConfig

    config = TrainConfig(
        generator=args.generator,
        generator_options=_options(args.option),
        image_size=args.size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        loss=args.loss,
        precision=args.precision,
        jit_compile=args.xla,
        seed=args.seed,
        learning_rate=args.lr,
    )
    config.validate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data, args.size, seed=args.seed)
    gan = CycleGAN(config)
    (out / "config.json").write_text(
        json.dumps({**config.to_dict(), "data": str(args.data)}, indent=2)
    )
    n = min(4, len(data.test_a), len(data.test_b))
    fixed = [test_images(x[:n], args.size) if x is not None else None
             for x in (data.test_a, data.test_b, data.test_a_twin, data.test_b_twin)]  # fmt: skip
    csv_path = out / "losses.csv"

    def after_epoch(result) -> None:
        print(file=sys.stderr)
        compile_txt = (
            f", first-step compile {result.compile_time:.1f} s" if result.compile_time else ""
        )
        print(
            f"epoch {result.epoch}: {result.wall_time:.1f} s, step median {result.step_median:.3f} s, "
            f"{result.images_per_s:.2f} img/s{compile_txt}; cycle loss {result.losses['cycle_loss_total']:.3f}"
        )
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["epoch", *LOSS_NAMES, "epoch_time", "step_median", "images_per_s"])
            writer.writerow([result.epoch, *(f"{result.losses[k]:.6f}" for k in LOSS_NAMES),
                             f"{result.wall_time:.3f}", f"{result.step_median:.4f}", f"{result.images_per_s:.3f}"])  # fmt: skip
        sample_grid(gan, *fixed).save(out / "samples" / f"epoch-{result.epoch:04d}.png")

    (out / "samples").mkdir(exist_ok=True)
    gan.fit(
        data,
        out_dir=out,
        resume=args.resume,
        callbacks=[after_epoch],
        progress=_progress(config.epochs),
    )
    print(f"done: checkpoints, samples and losses.csv in {out}")
    return 0


# ---- translate -----------------------------------------------------------------------
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def cmd_translate(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from effgan.data.pipeline import test_images, to_uint8
    from effgan.train import CycleGAN, TrainConfig, latest_checkpoint

    ckpt = Path(args.checkpoint)
    path = (
        ckpt
        if (ckpt / "ckpt.index").exists()
        else latest_checkpoint(ckpt / "checkpoints") or latest_checkpoint(ckpt)
    )
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint found in {ckpt} (expected a training --out folder or a "
            "checkpoints/epoch-NNNN folder)"
        )
    config = TrainConfig(**json.loads((path / "config.json").read_text()))
    gan = CycleGAN(config)
    gan.load(path)
    src = Path(args.input)
    files = (
        sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if src.is_dir()
        else [src]
    )
    if not files:
        raise FileNotFoundError(f"no images in {src}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"))[None]
        except OSError as err:
            print(f"skipping {f}: {err}", file=sys.stderr)
            continue
        y = gan.translate(test_images(arr, config.image_size), args.direction)
        Image.fromarray(to_uint8(y)[0]).save(out / f"{f.stem}_{args.direction}.png")
    print(f"translated {len(files)} image(s) {args.direction} into {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m effgan", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser(
        "variants", help="every generator and the discriminator with params and FLOPs"
    )
    v.add_argument("--size", type=int, default=256)
    v.add_argument("--json", action="store_true", help="machine-readable list")
    v.set_defaults(func=cmd_variants)

    d = sub.add_parser("data", help="render a built-in data set to disk")
    d.add_argument("dataset", choices=["cans"])
    d.add_argument("--out", required=True)
    d.add_argument("--count", type=int, default=300, help="images per training domain")
    d.add_argument("--size", type=int, default=256)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train a CycleGAN")
    t.add_argument("--generator", default="resnet")
    t.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="generator option, repeatable",
    )
    t.add_argument(
        "--data",
        default="cans",
        help="'cans', a CycleGAN-layout folder, or a folder of .npy arrays",
    )
    t.add_argument("--size", type=int, default=64)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--steps", type=int, default=None, help="cap on steps per epoch")
    t.add_argument("--batch-size", type=int, default=1)
    t.add_argument("--loss", default="bce", choices=["bce", "lsgan"])
    t.add_argument(
        "--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"]
    )
    t.add_argument("--xla", action="store_true", help="jit_compile the train step")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/train")
    t.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("translate", help="translate images with a trained checkpoint")
    r.add_argument(
        "--checkpoint", required=True, help="a training --out folder or a checkpoint folder"
    )
    r.add_argument("--input", required=True, help="an image or a folder of images")
    r.add_argument("--out", required=True)
    r.add_argument("--direction", default="ab", choices=["ab", "ba"])
    r.set_defaults(func=cmd_translate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from effgan.data.base import DataError
    from effgan.registry import ImageSizeError, UnknownGeneratorError
    from effgan.train import DivergenceError

    try:
        return args.func(args)
    except (
        DataError,
        ImageSizeError,
        UnknownGeneratorError,
        DivergenceError,
        ValueError,
        FileNotFoundError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
