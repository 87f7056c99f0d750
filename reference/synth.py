"""Synthetic Fashion-MNIST: the official IDX files, with images that train like the real task.

This workplace has no network, so tests, the demo and CI train on this set. It is built to
behave like Fashion-MNIST for lab 7b's MLP, not to look like it pixel for pixel: ten garment
classes drawn from a few prototypes each, confusable classes mixed into one another (shirt,
T-shirt, pullover and coat; sandal, sneaker and boot), random shifts, scales, textures and
noise, and a little label noise. With SGD for 10 epochs it overfits a little at lr 0.1,
under-trains at lr 0.001 and blows up at lr 1.0 with momentum 0.9, as the real data does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from grader.common.errors import UserError
from reference import fmnist

GENERATOR = "labgrader-synth"
VERSION = 1
SIDE = 28
PROTOTYPES_PER_CLASS = 6
CHUNK = 8192
# Which classes each class is confused with, as in Fashion-MNIST's confusion matrix.
CONFUSABLE = {
    0: (6, 2, 3), 1: (3,), 2: (4, 6, 0), 3: (0, 4, 1), 4: (2, 6, 3),
    5: (7, 9), 6: (0, 2, 4), 7: (5, 9), 8: (4, 2, 9), 9: (7, 5),
}
# Tuned by training the kit's MLP; tests/test_synth.py holds the behaviour they must give.
MIX_PROB = 0.5
MIX_MAX = 0.5
LABEL_NOISE = 0.01
PIXEL_NOISE = 0.3
TEXTURE = 0.35

_Y, _X = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)


def _soft(d):
    """Antialiased edge: signed distance (pixels) -> coverage, like the real scans' soft borders."""
    return 1.0 / (1.0 + np.exp(-2.5 * d))


def _box(y0, y1, x0, x1):
    return np.minimum.reduce([_soft(_Y - y0), _soft(y1 - _Y), _soft(_X - x0), _soft(x1 - _X)])


def _trapezoid(y0, y1, top_half, bottom_half, cx=13.5):
    t = np.clip((_Y - y0) / max(y1 - y0, 1e-3), 0, 1)
    half = top_half + (bottom_half - top_half) * t
    return np.minimum.reduce([_soft(_Y - y0), _soft(y1 - _Y), _soft(half - np.abs(_X - cx))])


def _bar(ya, xa, yb, xb, width):
    """A thick segment from (ya, xa) to (yb, xb): sleeves, legs, straps."""
    d = np.array([yb - ya, xb - xa], np.float32)
    length = float(np.hypot(*d)) or 1e-3
    u = d / length
    py, px = _Y - ya, _X - xa
    along = py * u[0] + px * u[1]
    across = np.abs(py * u[1] - px * u[0])
    return np.minimum.reduce([_soft(along), _soft(length - along), _soft(width / 2 - across)])


def _union(*masks):
    return np.maximum.reduce(masks)


def _garment(label: int, r: np.random.Generator) -> np.ndarray:
    """One prototype of a class, with its own proportions."""
    u = r.uniform
    cx = 13.5 + u(-0.8, 0.8)
    if label in (0, 2, 4, 6):
        top, bottom = u(2, 4), u(23, 27) if label != 4 else u(25.5, 27.5)
        half_top, half_bottom = u(5.5, 7.5), u(6, 8.5)
        torso = _trapezoid(top, bottom, half_top, half_bottom, cx)
        long_sleeves = label in (2, 4, 6)
        reach = u(20, 25) if long_sleeves else u(9, 13)
        spread = u(3, 6) if long_sleeves else u(6, 9)
        width = u(3.5, 5.5)
        sleeves = [_bar(top + 1.5, cx + s * (half_top - 1), reach, cx + s * (half_top + spread), width) for s in (-1, 1)]
        m = _union(torso, *sleeves)
        if label in (4, 6):
            m = m * (1 - u(0.3, 0.6) * _box(top + 2, bottom, cx - 0.6, cx + 0.6))
        if label in (0, 6, 4):
            m = m * (1 - u(0.4, 0.9) * _trapezoid(top - 1, top + u(1.5, 3), u(2, 3.5), 0.5, cx))
        return m
    if label == 1:
        top, gap = u(1, 3), u(0.8, 2.5)
        half = u(5, 7)
        legs = [_bar(top + 2, cx + s * (half / 2 + gap / 4), u(26, 27.5), cx + s * (half / 2 + gap / 2 + u(0, 1.5)), half - gap / 2)
                for s in (-1, 1)]
        return _union(_box(top, top + 4, cx - half, cx + half), *legs)
    if label == 3:
        top = u(1, 4)
        body = _trapezoid(top, u(25, 27.5), u(3, 5), u(8, 11), cx)
        if u() < 0.5:
            body = _union(body, *[_bar(top, cx + s * 3, top + u(4, 7), cx + s * u(5, 7), 2.5) for s in (-1, 1)])
        return body
    if label == 5:
        base = u(20, 23)
        sole = _box(base, base + u(1.5, 2.5), u(1, 3), u(24, 27))
        straps = [_bar(base, u(3, 24), base - u(4, 9), u(3, 24), u(1.2, 2.2)) for _ in range(r.integers(2, 5))]
        return _union(sole, *straps) * u(0.7, 1.0)
    if label == 7:
        base = u(20, 23)
        height = u(6, 9)
        shoe = _trapezoid(base - height, base, u(6, 9), u(11, 13), cx + u(0, 2))
        toe = _bar(base - 2, u(1, 3), base - 1, 14, u(3, 5))
        sole = _box(base - 1.2, base + 1, u(0.5, 2), u(25, 27.5))
        return _union(shoe * _soft(_X - u(1, 4)), toe, sole)
    if label == 8:
        y0, y1 = u(7, 11), u(24, 27)
        x0, x1 = u(1, 4), u(23, 27)
        body = _box(y0, y1, x0, x1)
        ring = np.abs(np.hypot(_Y - y0, (_X - (x0 + x1) / 2) * u(0.8, 1.3)) - u(4, 6.5))
        handle = _soft(u(0.8, 1.4) - ring) * _soft(y0 - _Y)
        return _union(body, handle * u(0.5, 1.0))
    if label == 9:
        base = u(23, 26)
        shaft = _box(u(2, 6), base, u(11, 15), u(23, 26))
        foot = _box(base - u(7, 10), base, u(1, 4), u(23, 26))
        heel = _box(base - 1, base + 1.5, u(17, 20), u(23, 26))
        return _union(shaft, foot, heel)
    raise ValueError(label)


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    """[10, K, 784] float32 in [0, 1]: each prototype a shape times a fabric shade and pattern."""
    out = np.empty((10, PROTOTYPES_PER_CLASS, SIDE * SIDE), np.float32)
    for c in range(10):
        for k in range(PROTOTYPES_PER_CLASS):
            m = _garment(c, rng)
            shade = rng.uniform(0.45, 1.0)
            f = rng.uniform(0.3, 1.4)
            pattern = 1 - rng.uniform(0, 0.35) * (0.5 + 0.5 * np.sin(f * _Y + rng.uniform(0, 6) + rng.uniform(-1, 1) * _X))
            out[c, k] = np.clip(m * shade * pattern, 0, 1).reshape(-1)
    return out


def _upsample_matrix(n_coarse: int) -> np.ndarray:
    """Linear interpolation from n_coarse to SIDE points: turns coarse noise into smooth texture."""
    pos = np.linspace(0, n_coarse - 1, SIDE)
    lo = np.clip(np.floor(pos).astype(int), 0, n_coarse - 2)
    frac = pos - lo
    m = np.zeros((SIDE, n_coarse), np.float32)
    m[np.arange(SIDE), lo] = 1 - frac
    m[np.arange(SIDE), lo + 1] = frac
    return m


_UP = _upsample_matrix(6)


def _tents(src: np.ndarray) -> np.ndarray:
    """[n, 28] source coordinates -> [n, 28, 28] bilinear interpolation matrices."""
    return np.maximum(0, 1 - np.abs(src[:, :, None] - np.arange(SIDE, dtype=np.float32)))


def _warp(images: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """Random scale and shift per image and axis, bilinear (separable, so two batched matmuls)."""
    n = len(images)
    c = (SIDE - 1) / 2
    grid = np.arange(SIDE, dtype=np.float32) - c
    scale = r.uniform(0.88, 1.12, (n, 2, 1)).astype(np.float32)
    shift = r.uniform(-2.0, 2.0, (n, 2, 1)).astype(np.float32)
    src = grid / scale + c - shift
    return _tents(src[:, 0]) @ images.reshape(n, SIDE, SIDE) @ _tents(src[:, 1]).transpose(0, 2, 1)


def _samples(labels: np.ndarray, protos: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """uint8 [n, 784] images of the given classes."""
    n = len(labels)
    k = protos.shape[1]
    f32 = np.float32
    w = r.random((n, 1), dtype=f32)
    img = protos[labels, r.integers(0, k, n)] * w + protos[labels, r.integers(0, k, n)] * (1 - w)
    options = np.array([[CONFUSABLE[c][i % len(CONFUSABLE[c])] for i in range(3)] for c in range(10)])
    partner = options[labels, r.integers(0, 3, n)]
    mix = np.where(r.random(n, dtype=f32) < MIX_PROB, MIX_MAX * r.random(n, dtype=f32), f32(0))[:, None]
    img = img * (1 - mix) + protos[partner, r.integers(0, k, n)] * mix
    img = _warp(img, r).reshape(n, -1)
    texture = _UP @ r.standard_normal((n, 6, 6), dtype=f32) @ _UP.T
    img *= (1 + TEXTURE * texture.reshape(n, -1)) * (0.7 + 0.55 * r.random((n, 1), dtype=f32))
    garment = img > 0.04
    img += PIXEL_NOISE * r.standard_normal(img.shape, dtype=f32)
    img *= garment
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def generate(n: int, protos: np.ndarray, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 [n, 28, 28], uint8 [n]); balanced classes in random order, some labels flipped."""
    labels = r.permutation(np.arange(n) % 10).astype(np.int64)
    images = np.empty((n, SIDE * SIDE), np.uint8)
    for i in range(0, n, CHUNK):
        images[i:i + CHUNK] = _samples(labels[i:i + CHUNK], protos, r)
    flip = r.uniform(0, 1, n) < LABEL_NOISE
    labels = np.where(flip, (labels + r.integers(1, 10, n)) % 10, labels)
    return images.reshape(n, SIDE, SIDE), labels.astype(np.uint8)


def write_synthetic(out_dir, n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> Path:
    """Write the four official files plus SYNTHETIC.json into out_dir; same seed, same bytes.

    Train and test come from separate streams, so the test set does not depend on n_train.
    """
    if n_train < 1 or n_test < 1:
        raise UserError(f"synthetic data needs at least one train and one test image, got {n_train} and {n_test}")
    if seed < 0:
        raise UserError(f"seed must be non-negative, got {seed}")
    out = Path(out_dir)
    protos = _prototypes(np.random.default_rng([seed, 0]))
    x_train, y_train = generate(n_train, protos, np.random.default_rng([seed, 1]))
    x_test, y_test = generate(n_test, protos, np.random.default_rng([seed, 2]))
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, array in zip(fmnist.FILES, (x_train, y_train, x_test, y_test)):
            fmnist.write_idx(out / name, array)
        marker = {"generator": GENERATOR, "version": VERSION, "seed": seed, "n_train": n_train, "n_test": n_test,
                  "note": "synthetic stand-in for Fashion-MNIST; not the real data"}
        (out / fmnist.SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write synthetic data into {out} ({e.strerror or e}); choose another --out")
    return out


def synth_command(args) -> int:
    start = time.perf_counter()
    out = write_synthetic(args.out, n_train=args.train, n_test=args.test, seed=args.seed)
    print(f"wrote SYNTHETIC Fashion-MNIST (seed {args.seed}, {args.train} train / {args.test} test images, "
          f"official IDX format) into {out} in {time.perf_counter() - start:.1f}s; it is not the real data")
    return 0


def demo_cache_dir() -> Path:
    root = os.environ.get("LABGRADER_CACHE")
    if root:
        return Path(root).expanduser() / f"demo-data-v{VERSION}"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "labgrader" / f"demo-data-v{VERSION}"


def demo_data_dir() -> Path:
    """The bundled demo's dataset (seed 0, full size), generated once and shared by every run."""
    target = demo_cache_dir()
    if (target / fmnist.SYNTHETIC_MARKER).is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as e:
        raise UserError(f"cannot create the demo data cache in {target.parent} ({e.strerror or e}); set LABGRADER_CACHE to a writable folder")
    try:
        print(f"labgrader: generating the demo's synthetic Fashion-MNIST in {target} (once)", file=sys.stderr)
        os.chmod(tmp, 0o755)
        write_synthetic(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / fmnist.SYNTHETIC_MARKER).is_file():
                raise
    except OSError as e:
        raise UserError(f"cannot create the demo data cache in {target} ({e.strerror or e}); set LABGRADER_CACHE to a writable folder")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
