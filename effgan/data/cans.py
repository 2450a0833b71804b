"""Procedural Coke/Pepsi-style cans: a deterministic two-domain data set with ground truth.

Why procedural: the thesis's Coke/Pepsi photos are not public, and real photos have no
ground truth. Here every scene is a parameter dict (background, pose, lighting, noise,
occluders) drawn from a seeded numpy Generator, and only the label texture wrapped around the
can depends on the domain. Rendering the same dict in domain A and B gives exact twins, so a
translation can be scored against what the can "should" look like in the other domain, and the
mask says where the style is supposed to change.

How a scene is drawn (all vectorised numpy, at twice the target size, then 2x2 box-averaged):
the background; the can as a cylinder seen slightly from above (an elliptical lid on top, the
label wrapped around the body with arcsin foreshortening, diffuse shading plus a specular
stripe); occluding polygons in front; then per-pixel sensor noise shared by both domains.
The 2x2 box filter (rather than LANCZOS) keeps each output pixel a function of its own 2x2 block
only, so pixels whose block holds no visible can body are bit-identical in the two twins.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from effgan.data.base import CycleData, DataError

# Bump when the renderer's output changes, so stale caches are not reused.
RENDER_VERSION = 1
DOMAINS = ("A", "B")

_TEX_W, _TEX_H = 2048, 1024  # master label: the full circumference x the can height
_SUPERSAMPLE = 2  # _box_down and the mask assume 2


# ----------------------------------------------------------------------------- label textures


def _soft_band(distance: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Coverage (0..1) of a band of the given half width, with a one-pixel soft edge."""
    return np.clip(half_width - np.abs(distance) + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Blend a flat colour into `img` (float, 0..255) where alpha > 0, in place."""
    img += alpha[..., None] * (np.asarray(colour, np.float32) - img)


def _draw_text(
    img: np.ndarray,
    text: str,
    centres: list[tuple[float, float]],
    height: float,
    colour: tuple[int, int, int],
    bold: float,
) -> np.ndarray:
    """Draw `text` centred at each point with PIL's built-in (offline) FreeType font."""
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=int(height))
    for x, y in centres:
        draw.text(
            (x, y),
            text,
            fill=colour,
            font=font,
            anchor="mm",
            stroke_width=int(bold * height),
            stroke_fill=colour,
        )
    return np.asarray(pil, np.float32)


def _cola_label() -> np.ndarray:
    """Red label, a white wave ribbon running twice around, white "Cola" twice."""
    h, w = _TEX_H, _TEX_W
    img = np.empty((h, w, 3), np.float32)
    img[:] = (196, 18, 32)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    phase = 2 * np.pi * 2 * x / w  # two periods around: seamless at the texture seam
    centre = h * (0.66 + 0.11 * np.sin(phase))
    half = h * (0.032 + 0.016 * np.cos(phase + 0.9))
    _paint(img, _soft_band(y - centre, half), (250, 250, 250))
    return _draw_text(
        img,
        "Cola",
        [(0.25 * w, 0.3 * h), (0.75 * w, 0.3 * h)],
        0.27 * h,
        (252, 252, 252),
        bold=0.03,
    )


def _pepsi_label() -> np.ndarray:
    """Blue label, a white band with dark-blue "PEPSO", a red/white/blue round logo above."""
    h, w = _TEX_H, _TEX_W
    img = np.empty((h, w, 3), np.float32)
    img[:] = (22, 48, 158)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    band_c, band_half = 0.68 * h, 0.085 * h
    _paint(img, np.broadcast_to(_soft_band(y - band_c, band_half), (h, w)), (246, 246, 246))
    radius = 0.165 * h
    for x0 in (0.25 * w, 0.75 * w):
        dx, dy = x - x0, y - 0.33 * h
        dist = np.sqrt(dx * dx + dy * dy)
        _paint(img, np.clip(radius - dist + 0.5, 0, 1), (250, 250, 250))  # outline disc
        inner = np.clip(0.86 * radius - dist + 0.5, 0, 1)  # the white gap is the wave
        wave = radius * (-0.05 + 0.16 * np.sin(np.pi * dx / (0.86 * radius)))
        red = np.clip(wave - 0.1 * radius - dy + 0.5, 0, 1)
        blue = np.clip(dy - wave - 0.1 * radius + 0.5, 0, 1)
        _paint(img, inner * red, (222, 28, 48))
        _paint(img, inner * blue, (30, 76, 196))
    centres = [(0.25 * w, band_c), (0.75 * w, band_c)]
    return _draw_text(img, "PEPSO", centres, 0.15 * h, (14, 34, 118), bold=0.04)


@functools.lru_cache(maxsize=2)
def _master_label(domain: str) -> Image.Image:
    return Image.fromarray(
        np.clip(_cola_label() if domain == "A" else _pepsi_label(), 0, 255).round().astype(np.uint8)
    )


@functools.lru_cache(maxsize=16)
def _label(domain: str, height: int) -> np.ndarray:
    """The label at `height` rows (a pyramid level matched to the render size), float 0..1."""
    small = _master_label(domain).resize((2 * height, height), Image.LANCZOS)
    arr = np.asarray(small, np.float32) / 255.0
    arr.setflags(write=False)
    return arr


def _label_height(size: int) -> int:
    return int(min(_TEX_H, max(64, 2 ** math.ceil(math.log2(size)))))


# ----------------------------------------------------------------------------- scene parameters


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for scene `index` of a named split: independent per (seed, split, index)."""
    entropy = [zlib.crc32(split.encode()), int(seed) & (2**64 - 1), int(index)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def draw_scene(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one scene's parameters (plain floats/ints/lists: printable, JSON-serialisable).

    Geometry is in fractions of the image side, so a scene renders at any size.
    """
    height = rng.uniform(0.42, 0.8)
    aspect = rng.uniform(1.45, 2.0)  # can height / diameter
    p: dict[str, Any] = {
        "bg_kind": int(rng.integers(3)),  # 0 smooth gradient, 1 blurred noise, 2 stripes
        "bg_seed": int(rng.integers(2**31)),
        "cx": rng.uniform(0.3, 0.7),
        "cy": rng.uniform(0.33, 0.67),
        "height": height,
        "radius": height / (2 * aspect),
        "lid": rng.uniform(0.15, 0.32),  # lid ellipse minor / major axis: view elevation
        "tilt": math.radians(rng.uniform(-25, 25)),
        "spin": rng.uniform(0, 1),
        "light": rng.uniform(-0.9, 0.9),  # light direction, radians around the axis
        "ambient": rng.uniform(0.25, 0.5),
        "spec": rng.uniform(0.25, 0.7),
        "spec_width": rng.uniform(0.04, 0.14),
        "brightness": rng.uniform(0.75, 1.15),
        "tint": (1 + rng.normal(0, 0.06, 3)).tolist(),
        "noise": rng.uniform(0, 0.025),
        "noise_seed": int(rng.integers(2**31)),
    }
    p = {k: float(v) if isinstance(v, np.floating) else v for k, v in p.items()}
    # Occluders must leave at least 40% of the can visible: redraw a few times, else drop.
    n_occ = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
    body = _body_mask(p, 64)
    for _ in range(5):
        p["occluders"] = [_draw_occluder(rng, p) for _ in range(n_occ)]
        if n_occ == 0:
            break
        occ = _occluder_mask(p["occluders"], 64)
        if (body & ~occ).sum() >= 0.4 * body.sum():
            break
    else:
        p["occluders"] = []
    return p


def _draw_occluder(rng: np.random.Generator, p: dict[str, Any]) -> dict[str, Any]:
    """A random star-shaped polygon near the can, in a random flat colour."""
    cx = p["cx"] + rng.normal(0, 0.2)
    cy = p["cy"] + rng.normal(0, 0.22)
    size = rng.uniform(0.08, 0.32)
    n = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = size * rng.uniform(0.25, 1.0, n)
    xs, ys = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    return {"points": pts, "colour": rng.uniform(0.05, 0.95, 3).tolist()}


# ----------------------------------------------------------------------------- rendering


def _background(p: dict[str, Any], s: int) -> np.ndarray:
    """An (s, s, 3) float32 background in 0..1; its random draws do not depend on s."""
    rng = np.random.default_rng(p["bg_seed"])
    kind = p["bg_kind"]
    if kind == 0:  # smooth gradient through a few colours
        n = int(rng.integers(2, 4))
        grid = rng.uniform(0, 1, (n, n, 3))
        img = _resize_grid(grid, s, Image.BICUBIC)
    elif kind == 1:  # blurred colour noise around a base colour
        n = int(rng.integers(6, 16))
        base = rng.uniform(0.1, 0.9, 3)
        grid = np.clip(base + rng.normal(0, 0.18, (n, n, 3)), 0, 1)
        pil = Image.fromarray((grid * 255).round().astype(np.uint8)).resize((s, s), Image.BICUBIC)
        pil = pil.filter(ImageFilter.GaussianBlur(s * rng.uniform(0.01, 0.04)))
        img = np.asarray(pil, np.float32) / 255.0
    else:  # horizontal stripes with blocky noise
        n = int(rng.integers(3, 9))
        base = rng.uniform(0.15, 0.85, 3)
        stripes = np.clip(base + rng.normal(0, 0.12, (n, 1, 3)), 0, 1)
        blocks = int(rng.integers(24, 64))
        noise = rng.normal(0, 0.05, (blocks, blocks, 3))
        img = _resize_grid(stripes, s, Image.NEAREST)
        img = np.clip(img + _resize_grid(noise + 0.5, s, Image.NEAREST) - 0.5, 0, 1)
    return img.astype(np.float32)


def _resize_grid(grid: np.ndarray, s: int, method: int) -> np.ndarray:
    """Resize a small float grid (values 0..1) to (s, s, 3) with PIL."""
    pil = Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8))
    return np.asarray(pil.resize((s, s), method), np.float32) / 255.0


class _Geometry:
    """The can's pixel geometry at supersampled size s, restricted to its bounding box."""

    def __init__(self, p: dict[str, Any], s: int) -> None:
        ct, st = math.cos(p["tilt"]), math.sin(p["tilt"])
        cx, cy = p["cx"] * s, p["cy"] * s
        self.hw = p["radius"] * s  # half width
        self.hh = p["height"] * s / 2  # half height of the body, along the axis
        self.e = p["lid"] * self.hw  # lid ellipse minor semi-axis
        ext_x = abs(ct) * self.hw + abs(st) * (self.hh + self.e)
        ext_y = abs(st) * self.hw + abs(ct) * (self.hh + self.e)
        self.x0, self.x1 = max(0, int(cx - ext_x) - 1), min(s, int(cx + ext_x) + 2)
        self.y0, self.y1 = max(0, int(cy - ext_y) - 1), min(s, int(cy + ext_y) + 2)
        dx = (np.arange(self.x0, self.x1, dtype=np.float32) + 0.5 - cx)[None, :]
        dy = (np.arange(self.y0, self.y1, dtype=np.float32) + 0.5 - cy)[:, None]
        self.u = (dx * ct - dy * st) / self.hw  # across the can, -1..1 on the body
        self.v = dx * st + dy * ct  # along the axis, pixels, 0 at the centre
        sq = np.sqrt(np.clip(1 - self.u * self.u, 0, None))
        self.v_top = -self.hh + self.e * sq  # the lid's front edge
        inside = np.abs(self.u) < 1
        self.body = inside & (self.v > self.v_top) & (self.v < self.hh + self.e * sq)
        self.rho2 = self.u * self.u + ((self.v + self.hh) / self.e) ** 2  # lid ellipse radius^2
        self.lid = self.rho2 <= 1

    @property
    def box(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _body_mask(p: dict[str, Any], s: int) -> np.ndarray:
    g = _Geometry(p, s)
    mask = np.zeros((s, s), bool)
    mask[g.box] = g.body
    return mask


def _occluder_mask(occluders: list[dict[str, Any]], s: int, index: int | None = None) -> np.ndarray:
    """Pixels covered by the occluders (or only by occluder `index`)."""
    pil = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(pil)
    for i, occ in enumerate(occluders):
        if index is None or i == index:
            draw.polygon([(x * s, y * s) for x, y in occ["points"]], fill=255)
    return np.asarray(pil) > 0


def _box_down(img: np.ndarray) -> np.ndarray:
    """2x2 box average: each output pixel depends on its own 2x2 block only (see module doc)."""
    return (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2]) * 0.25


def _render(
    p: dict[str, Any], size: int, domains: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Render one scene in each of `domains`: ({domain: uint8 image}, bool mask)."""
    if size % 32 or not 32 <= size <= 512:
        raise DataError(f"image size must be a multiple of 32 in 32..512, got {size}")
    s = _SUPERSAMPLE * size
    img = _background(p, s)
    g = _Geometry(p, s)
    box = img[g.box]
    tint = np.asarray(p["tint"], np.float32) * p["brightness"]

    # Lid: a light rim ring around a darker metal disc, lit like the body.
    lid_shade = 0.62 + 0.18 * g.u[g.lid] * math.sin(p["light"]) + 0.08 * np.sqrt(g.rho2[g.lid])
    lid_shade = np.where(g.rho2[g.lid] > 0.78, 0.93, lid_shade)
    box[g.lid] = np.clip(lid_shade[:, None] * (0.5 + 0.5 * tint), 0, 1)

    # Body: texture coordinates from the cylinder (arcsin: cos-foreshortening at the edges).
    phi = np.arcsin(np.clip(g.u[g.body], -1, 1))
    t = (g.v[g.body] - g.v_top[g.body]) / (2 * g.hh)
    diffuse = p["ambient"] + (1 - p["ambient"]) * np.clip(np.cos(phi - p["light"]), 0, None)
    spec = p["spec"] * np.exp(-(((phi - p["light"] / 2) / p["spec_width"]) ** 2))
    shade = (diffuse[:, None] * tint).astype(np.float32)
    spec = spec[:, None].astype(np.float32)

    th = _label_height(size)
    rows = np.clip((t * th).astype(np.intp), 0, th - 1)
    cols = (((p["spin"] + phi / (2 * np.pi)) % 1.0) * (2 * th)).astype(np.intp) % (2 * th)

    occ = _occluder_mask(p["occluders"], s)
    visible = np.zeros((s, s), bool)
    visible[g.box] = g.body
    visible &= ~occ
    mask = visible[0::2, 0::2] | visible[1::2, 0::2] | visible[0::2, 1::2] | visible[1::2, 1::2]

    noise_rng = np.random.default_rng(p["noise_seed"])
    noise = noise_rng.standard_normal((size, size, 3), dtype=np.float32) * p["noise"]

    out = {}
    for domain in domains:
        scene = img.copy()
        label = _label(domain, th)[rows, cols]
        scene[g.box][g.body] = np.clip(label * shade + spec, 0, 1)
        for i, o in enumerate(p["occluders"]):
            scene[_occluder_mask(p["occluders"], s, i)] = o["colour"]
        small = _box_down(scene)
        out[domain] = np.clip((small + noise) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, mask


def render_scene(
    params: dict[str, Any], domain: str = "A", size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene in one domain: (uint8 (size, size, 3) image, bool (size, size) mask).

    The same `params` in the other domain gives the exact twin; the mask marks the visible
    can body (the only place the twins differ).
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be 'A' or 'B', got {domain!r}")
    images, mask = _render(params, size, (domain,))
    return images[domain], mask


def _render_split(
    seed: int, split: str, n: int, size: int, domains: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Render the first n scenes of a split in the given domains, plus their masks."""
    images = {d: np.empty((n, size, size, 3), np.uint8) for d in domains}
    masks = np.empty((n, size, size), bool)
    for i in range(n):
        rendered, masks[i] = _render(draw_scene(scene_rng(seed, split, i)), size, domains)
        for d in domains:
            images[d][i] = rendered[d]
    return images, masks


def render_pairs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n scenes, each rendered in A and in B: (images_a, images_b, masks). Deterministic."""
    images, masks = _render_split(seed, "pairs", n, size, DOMAINS)
    return images["A"], images["B"], masks


# ----------------------------------------------------------------------------- data set


def _build(
    image_size: int, n_train_a: int, n_train_b: int, n_test: int, seed: int
) -> dict[str, np.ndarray]:
    """All splits. Train A and B come from independent scene streams: the data is unpaired."""
    for name, count in (("n_train_a", n_train_a), ("n_train_b", n_train_b), ("n_test", n_test)):
        if count < 1:
            raise DataError(f"{name} must be at least 1, got {count}")
    train_a, _ = _render_split(seed, "trainA", n_train_a, image_size, ("A",))
    train_b, _ = _render_split(seed, "trainB", n_train_b, image_size, ("B",))
    test_a, mask_a = _render_split(seed, "testA", n_test, image_size, DOMAINS)
    test_b, mask_b = _render_split(seed, "testB", n_test, image_size, DOMAINS)
    return {
        "train_a": train_a["A"],
        "train_b": train_b["B"],
        "test_a": test_a["A"],
        "test_a_twin": test_a["B"],
        "test_a_mask": mask_a,
        "test_b": test_b["B"],
        "test_b_twin": test_b["A"],
        "test_b_mask": mask_b,
    }


def default_cache_dir() -> Path:
    """`$EFFGAN_CACHE` if set, else ~/.cache/effgan/cans."""
    env = os.environ.get("EFFGAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "effgan" / "cans"


def cache_path(
    cache_dir: Path, image_size: int, n_train_a: int, n_train_b: int, n_test: int, seed: int
) -> Path:
    name = (
        f"cans_v{RENDER_VERSION}_seed{seed}_px{image_size}_a{n_train_a}_b{n_train_b}_t{n_test}.npz"
    )
    return Path(cache_dir) / name


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if the file is missing or unreadable (then re-render)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zlib.error, zipfile.BadZipFile):
        return None


def load_cans(
    image_size: int = 64,
    n_train_a: int = 300,
    n_train_b: int = 200,
    n_test: int = 50,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> CycleData:
    """The cans data set (300 A / 200 B by default, like the thesis's cola/pepsi), cached.

    The cache is one compressed .npz per (seed, size, counts); a missing or corrupt file is
    re-rendered, which gives the same bytes.
    """
    path = cache_path(
        cache_dir or default_cache_dir(), image_size, n_train_a, n_train_b, n_test, seed
    )
    arrays = _read_npz(path)
    keys = (
        "train_a",
        "train_b",
        "test_a",
        "test_b",
        "test_a_twin",
        "test_b_twin",
        "test_a_mask",
        "test_b_mask",
    )
    if arrays is None or set(arrays) != set(keys):
        arrays = _build(image_size, n_train_a, n_train_b, n_test, seed)
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-render later
            _write_npz_atomic(path, arrays)
    return CycleData(name="cans", **{k: arrays[k] for k in keys})


def write_cans_folder(out: Path, count: int, size: int, seed: int) -> Path:
    """Write the cans in the CycleGAN folder layout, plus the twins and masks as PNG.

    `count` images per training domain, max(1, count // 5) per test domain. Twins and masks
    share their test image's file name.
    """
    out = Path(out)
    arrays = _build(size, count, count, max(1, count // 5), seed)
    folders = {
        "trainA": arrays["train_a"],
        "trainB": arrays["train_b"],
        "testA": arrays["test_a"],
        "testB": arrays["test_b"],
        "testA_twin": arrays["test_a_twin"],
        "testB_twin": arrays["test_b_twin"],
        "testA_mask": arrays["test_a_mask"].astype(np.uint8) * 255,
        "testB_mask": arrays["test_b_mask"].astype(np.uint8) * 255,
    }
    for folder, images in folders.items():
        (out / folder).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(out / folder / f"{i:05d}.png")
        # A rerun with a smaller count must not leave the old run's extra images behind;
        # only our own NNNNN.png names are touched.
        for stale in (out / folder).glob("[0-9][0-9][0-9][0-9][0-9].png"):
            if int(stale.stem) >= len(images):
                stale.unlink()
    return out


def save_preview(path: Path | str, n: int = 6, size: int = 256, seed: int = 0) -> Path:
    """A PNG for humans: one row per scene with the A render, its B twin and the mask."""
    images_a, images_b, masks = render_pairs(n, size, seed)
    mask_rgb = np.repeat(masks[..., None].astype(np.uint8) * 255, 3, axis=-1)
    rows = [np.concatenate(row, axis=1) for row in zip(images_a, images_b, mask_rgb, strict=True)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
