"""RandAugment and AugMix: every op against PIL, the policies against per-image PIL replays of their own draws,
the draws' distributions, reproducibility from the generator, and the view specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from scipy import stats

from noisykd import augment as A
from noisykd.augment import ops as O
from noisykd.errors import ConfigError, DataError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NEAREST, BILINEAR = Image.Resampling.NEAREST, Image.Resampling.BILINEAR


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def sample_images(b: int = 6, seed: int = 1) -> torch.Tensor:
    """uint8 B x 3 x 32 x 32: noise, plus a smooth gradient (geometry visible) and a low-contrast image."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    imgs[0] = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).astype(np.uint8)
    imgs[1] = imgs[1] // 4 + 60  # values 60-123: autocontrast and equalize have work to do
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()


def to_pil(img_chw: torch.Tensor) -> Image.Image:
    arr = img_chw.permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def from_pil(im: Image.Image) -> torch.Tensor:
    arr = np.asarray(im)
    return torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1).copy()).permute(2, 0, 1)


def pil_each(x: torch.Tensor, fn, params) -> torch.Tensor:
    """The reference: fn(PIL image, its parameter) one image at a time."""
    return torch.stack([from_pil(fn(to_pil(img), p)) for img, p in zip(x, params)])


def assert_close_to_pil(ours: torch.Tensor, ref: torch.Tensor, max_diff: int, max_frac: float) -> None:
    """At most ``max_frac`` of the values differ at all, and none by more than ``max_diff`` grey levels."""
    assert ours.shape == ref.shape and ours.dtype == torch.uint8
    diff = (ours.int() - ref.int()).abs()
    assert int(diff.max()) <= max_diff, f"max deviation {int(diff.max())}"
    assert float((diff > 0).float().mean()) <= max_frac, f"{float((diff > 0).float().mean()):.4%} of values differ"


# --- ops against PIL --------------------------------------------------------------------------------------
# Measured (Pillow 13, 64 images, all 31 RandAugment magnitudes, both signs): every op bit-exact, except bilinear
# shears / rotations: 14 of 8.6 million values off by 1 (an interpolated value within 1e-14 of an integer). The
# tolerances leave room for another Pillow version; geometric ops for sample points on pixel edges.

def shear_x_ref(resample):
    return lambda im, v: im.transform(im.size, Image.Transform.AFFINE, (1, v, 0, 0, 1, 0), resample)


def shear_y_ref(resample):
    return lambda im, v: im.transform(im.size, Image.Transform.AFFINE, (1, 0, 0, v, 1, 0), resample)


def translate_x_ref(resample):  # torchvision's sign: F.affine(translate=[t, 0]) reads the input at x - t
    return lambda im, t: im.transform(im.size, Image.Transform.AFFINE, (1, 0, -t, 0, 1, 0), resample)


def translate_y_ref(resample):
    return lambda im, t: im.transform(im.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, -t), resample)


def rotate_ref(resample):
    return lambda im, deg: im.rotate(deg, resample)


GEOMETRIC = [
    ("shear_x", shear_x_ref, [0.03, -0.03, 0.09, -0.3, 0.21, 0.0]),
    ("shear_y", shear_y_ref, [0.03, -0.03, 0.09, -0.3, 0.21, 0.0]),
    ("translate_x", translate_x_ref, [1, -1, 4, -4, 14, -10]),
    ("translate_y", translate_y_ref, [1, -1, 4, -4, 14, -10]),
    ("rotate", rotate_ref, [3.0, -3.0, 9.0, -27.0, 30.0, -12.5]),
]


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("name, ref, params", GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
def test_geometric_ops_match_pil(name, ref, params, interpolation):
    x = sample_images()
    ours = getattr(O, name)(x, torch.tensor(params, dtype=torch.float64), interpolation)  # one value per image
    expected = pil_each(x, ref(NEAREST if interpolation == "nearest" else BILINEAR), params)
    assert_close_to_pil(ours, expected, max_diff=255 if interpolation == "nearest" else 2, max_frac=0.002)
    assert torch.equal(x, sample_images())  # the input is untouched


def test_nearest_geometry_is_pils_fixed_point():
    # RandAugment's float32 shear factors 0.04 and 0.2 (m = 4, 20) put whole rows of sample points within 1e-7 of
    # a pixel edge; PIL decides them in 16.16 fixed point (computed in float64, 0.75% of the values differed).
    x = sample_images()
    shears = A.randaugment_magnitudes(31, 32, 32)["shear_x"][0]
    for m in (4, 12, 20, 28):
        for v in (float(shears[m]), -float(shears[m])):
            for name, ref in (("shear_x", shear_x_ref), ("shear_y", shear_y_ref)):
                expected = pil_each(x, ref(NEAREST), [v] * len(x))
                assert torch.equal(getattr(O, name)(x, v), expected), (name, m, v)


ENHANCE = [
    ("brightness", ImageEnhance.Brightness), ("color", ImageEnhance.Color), ("contrast", ImageEnhance.Contrast),
    ("sharpness", ImageEnhance.Sharpness),
]


@pytest.mark.parametrize("name, enhancer", ENHANCE, ids=[e[0] for e in ENHANCE])
def test_enhance_ops_match_pil(name, enhancer):
    x = sample_images()
    for factors in ([1.09, 0.91, 1.9, 0.1, 1.27, 0.73], [0.0, 1.0, 2.5, 1.03, 0.5, 1.81]):  # both signs of 1 + v
        ours = getattr(O, name)(x, torch.tensor(factors))
        expected = pil_each(x, lambda im, f: enhancer(im).enhance(f), factors)
        assert_close_to_pil(ours, expected, max_diff=1, max_frac=0.01)


@pytest.mark.parametrize("name, enhancer", ENHANCE, ids=[e[0] for e in ENHANCE])
def test_enhance_ops_on_grey_images_match_pil(name, enhancer):
    x = sample_images()[:, :1]  # PIL mode L
    factors = [0.2, 1.5, 1.09, 0.91, 1.9, 0.0]
    ours = getattr(O, name)(x, torch.tensor(factors))
    assert_close_to_pil(ours, pil_each(x, lambda im, f: enhancer(im).enhance(f), factors), max_diff=1, max_frac=0.01)


def test_tone_ops_match_pil():
    x = sample_images()
    bits = [1, 2, 4, 5, 7, 8]
    assert_close_to_pil(O.posterize(x, torch.tensor(bits)), pil_each(x, ImageOps.posterize, bits), 1, 0.01)
    thresholds = [0.0, 128.0, 178.5, 229.5, 255.0, 256.0]
    assert_close_to_pil(O.solarize(x, torch.tensor(thresholds)), pil_each(x, ImageOps.solarize, thresholds), 1, 0.01)
    for fn, ref in ((O.autocontrast, ImageOps.autocontrast), (O.equalize, ImageOps.equalize)):
        for imgs in (x, x[:, :1]):  # RGB and grey
            assert_close_to_pil(fn(imgs), pil_each(imgs, lambda im, _: ref(im), [None] * len(imgs)), 1, 0.01)


def test_grayscale_is_pils_convert_L():
    x = sample_images()
    ref = torch.stack([from_pil(to_pil(img).convert("L")) for img in x])
    assert torch.equal(O.grayscale(x), ref)


def test_autocontrast_and_equalize_leave_flat_channels_alone():
    x = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    x[1, 1] = torch.arange(64, dtype=torch.uint8).view(8, 8)  # one channel with a range, two flat
    for fn, ref in ((O.autocontrast, ImageOps.autocontrast), (O.equalize, ImageOps.equalize)):
        out = fn(x)
        assert torch.equal(out[0], x[0]) and torch.equal(out[1, 0], x[1, 0])
        assert torch.equal(out, pil_each(x, lambda im, _: ref(im), [None, None]))


def test_rotation_direction_and_centre():
    # A 90 degree turn of an even-sized image about its centre is exact: counter-clockwise, like torch.rot90.
    x = sample_images()
    assert torch.equal(O.rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(O.rotate(x, 0.0), x) and torch.equal(O.shear_x(x, 0.0), x)


def test_op_argument_checks():
    x = sample_images()
    with pytest.raises(DataError):
        O.brightness(x.float(), 1.5)  # uint8 only
    with pytest.raises(DataError):
        O.color(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), 0.5)  # no grey version of 4 channels
    with pytest.raises(DataError):
        O.rotate(x, torch.zeros(3))  # one value per image
    with pytest.raises(ConfigError):
        O.posterize(x, 9)
    with pytest.raises(ConfigError):
        O.rotate(x, 3.0, interpolation="bicubic")


def test_apply_per_image_gives_each_image_its_op():
    x = sample_images()
    op_index = torch.tensor([0, 1, -1, 1, 0, 2])
    ops = [lambda imgs, idx: O.solarize(imgs, 0), lambda imgs, idx: O.rotate(imgs, idx.double()), None]
    out = O.apply_per_image(x, op_index, ops)
    assert torch.equal(out[[0, 4]], 255 - x[[0, 4]])
    assert torch.equal(out[[1, 3]], O.rotate(x[[1, 3]], torch.tensor([1.0, 3.0])))  # idx picks the parameters
    assert torch.equal(out[[2, 5]], x[[2, 5]])  # -1 and a None op leave the image


# --- RandAugment ------------------------------------------------------------------------------------------

def test_randaugment_magnitudes_are_torchvisions():
    table = A.randaugment_magnitudes(31, 32, 32)
    assert list(table) == list(A.RANDAUGMENT_OPS) and len(table) == 14
    mag = {name: (v[3].item() if v is not None else None) for name, (v, _) in table.items()}
    assert mag["shear_x"] == pytest.approx(0.03) and mag["rotate"] == pytest.approx(3.0)
    assert mag["translate_x"] == pytest.approx(150 / 331 * 32 * 3 / 30) and mag["brightness"] == pytest.approx(0.09)
    assert mag["solarize"] == pytest.approx(229.5) and mag["posterize"] == 8
    bits = table["posterize"][0].int().tolist()
    assert bits[0] == 8 and bits[-1] == 4 and bits == sorted(bits, reverse=True)
    assert [name for name, (_, signed) in table.items() if signed] == [
        "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast", "sharpness"]
    assert A.randaugment_magnitudes(31, 20, 40)["translate_y"][0][-1].item() == pytest.approx(150 / 331 * 20)


def pil_randaugment_op(im: Image.Image, name: str, v: float) -> Image.Image:
    """torchvision's ``_apply_op(img, name, v)`` on a PIL image, written out with PIL (NEAREST, fill 0)."""
    if name == "identity":
        return im
    if name in ("shear_x", "shear_y"):  # F.affine(shear=degrees(atan(v)), center=[0, 0]) -> this matrix
        return (shear_x_ref if name == "shear_x" else shear_y_ref)(NEAREST)(im, v)
    if name in ("translate_x", "translate_y"):
        return (translate_x_ref if name == "translate_x" else translate_y_ref)(NEAREST)(im, int(v))
    if name == "rotate":
        return im.rotate(v, NEAREST)
    if name in ("brightness", "color", "contrast", "sharpness"):
        return dict(ENHANCE)[name](im).enhance(1.0 + v)
    if name == "posterize":
        return ImageOps.posterize(im, int(v))
    if name == "solarize":
        return ImageOps.solarize(im, v)
    return getattr(ImageOps, name)(im)


@pytest.mark.parametrize("n, m", [(1, 3), (2, 9), (3, 30)])
def test_randaugment_equals_a_per_image_pil_replay_of_its_draws(n, m):
    x = sample_images(b=120, seed=n)
    policy = A.RandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=n, m=m)
    ops, negative = policy.draw(len(x), gen(m), x.device)
    ours = policy.apply(x, ops, negative)
    table = A.randaugment_magnitudes(31, 32, 32)
    expected = []
    for i, img in enumerate(x):  # the reference, one image at a time
        im = to_pil(img)
        for r in range(n):
            name = A.RANDAUGMENT_OPS[int(ops[r, i])]
            values, signed = table[name]
            v = float(values[m].item()) if values is not None else 0.0
            im = pil_randaugment_op(im, name, -v if signed and bool(negative[r, i]) else v)
        expected.append(from_pil(im))
    assert_close_to_pil(ours, torch.stack(expected), max_diff=255, max_frac=0.002)


def test_randaugment_policy_is_ops_then_crop_flip_normalise_cutout():
    # The NRD / GJS student view: RandAugment(N=1, M=3) -> crop 32 pad 4 -> flip -> Cutout 16.
    batch = sample_images(b=32).permute(0, 2, 3, 1)  # stored layout
    pipe = A.AugmentPipeline("randaugment", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, n=1, m=3, cutout_size=16)
    out = pipe(batch, gen(5))
    g = gen(5)
    policy = pipe.policy
    ops, negative = policy.draw(32, g, batch.device)
    x = policy.apply(A.channels_first(batch), ops, negative)
    x = A.random_crop_flip(x, 4, g, mode="constant", p=0.5)
    x = A.cutout(A.to_float_normalized(x, A.CIFAR10_MEAN, A.CIFAR10_STD), 16, g)
    assert torch.equal(out, x)
    assert out.dtype == torch.float32 and out.shape == (32, 3, 32, 32) and out.is_contiguous()


def test_randaugment_draws_are_uniform_over_ops_and_signs():
    b = 20_000
    policy = A.RandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=2, m=9)
    ops, negative = policy.draw(b, gen(0), torch.device("cpu"))
    k = len(A.RANDAUGMENT_OPS)
    for r in range(2):
        counts = torch.bincount(ops[r], minlength=k).double()
        sigma = math.sqrt(b * (1 / k) * (1 - 1 / k))
        assert bool(((counts - b / k).abs() < 5 * sigma).all()), counts.tolist()
        assert stats.chisquare(counts.numpy()).pvalue > 1e-4
        assert abs(negative[r].double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / b)
    # The two rounds are independent draws: a pair (op1, op2) lands in each of the 196 cells about equally.
    pairs = torch.bincount(ops[0] * k + ops[1], minlength=k * k).double()
    assert stats.chisquare(pairs.numpy()).pvalue > 1e-4


def test_randaugment_gives_images_of_one_batch_different_ops():
    same = sample_images()[:1].expand(64, -1, -1, -1).permute(0, 2, 3, 1).contiguous()  # one image, 64 times
    policy = A.get_policy("randaugment", mean=A.CIFAR10_MEAN, std=A.CIFAR10_STD, n=1, m=9, padding=0, flip_p=0.0)
    out = policy(same, gen(2))
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) >= 8  # 14 ops, some pairs of sign alike (identity, autocontrast, ...)
    ops, _ = policy.draw(64, gen(2), torch.device("cpu"))
    assert len(set(ops[0].tolist())) >= 10


# --- GJS's RandAugment (ildoonet/pytorch-randaugment) ------------------------------------------------------
# Facts read from ildoonet/pytorch-randaugment, RandAugment/augmentations.py at commit 48b8f509: augment_list()'s
# 16 (op, min, max) and ``val = m / 30 * (max - min) + min``; hand-computed here at several M, not derived from
# our table.
GJS_VALUES_BY_M = {
    # m: rotate, posterize bits, solarize, solarize_add, enhance, shear, cutout side, translate px
    1: (1.0, 1, 256 / 30, 110 / 30, 0.1 + 1.8 / 30, 0.01, 40 / 30, 100 / 30),
    3: (3.0, 1, 25.6, 11.0, 0.28, 0.03, 4.0, 10.0),
    9: (9.0, 1, 76.8, 33.0, 0.64, 0.09, 12.0, 30.0),
    15: (15.0, 2, 128.0, 55.0, 1.0, 0.15, 20.0, 50.0),
    30: (30.0, 4, 256.0, 110.0, 1.9, 0.3, 40.0, 100.0),
}


def test_gjs_randaugment_table_is_the_packages():
    assert A.GJS_RANDAUGMENT_OPS == (
        "autocontrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add", "color", "contrast",
        "brightness", "sharpness", "shear_x", "shear_y", "cutout_abs", "translate_x_abs", "translate_y_abs")
    assert "identity" not in A.GJS_RANDAUGMENT_OPS and len(A.GJS_RANDAUGMENT_OPS) == 16
    assert A.GJS_SIGNED_OPS == {"rotate", "shear_x", "shear_y", "translate_x_abs", "translate_y_abs"}
    for m, (rot, bits, sol, sol_add, enh, shear, cut, trans) in GJS_VALUES_BY_M.items():
        v = A.gjs_randaugment_values(m)
        assert v["rotate"] == pytest.approx(rot) and max(1, int(v["posterize"])) == bits
        assert v["solarize"] == pytest.approx(sol) and v["solarize_add"] == pytest.approx(sol_add)
        for name in ("color", "contrast", "brightness", "sharpness"):
            assert v[name] == pytest.approx(enh)
        assert v["shear_x"] == pytest.approx(shear) and v["shear_y"] == pytest.approx(shear)
        assert v["cutout_abs"] == pytest.approx(cut)
        assert v["translate_x_abs"] == pytest.approx(trans) and v["translate_y_abs"] == pytest.approx(trans)
    # against torchvision's table at M = 3 (31 bins): ours translates 1 px, keeps 8 bits, solarizes at 229.5
    tv = A.randaugment_magnitudes(31, 32, 32)
    assert int(tv["translate_x"][0][3]) == 1 and int(tv["posterize"][0][3]) == 8
    assert float(tv["solarize"][0][3]) == pytest.approx(229.5)


def pil_gjs_op(im: Image.Image, name: str, v: float, negative: bool, cx: float, cy: float) -> Image.Image:
    """The package's op ``name`` on a PIL image with value v, its sign flip and CutoutAbs centre given, written
    out with PIL and numpy from the facts of its source (not its code)."""
    s = -v if negative else v
    if name == "rotate":
        return im.rotate(s)
    if name == "shear_x":
        return im.transform(im.size, Image.Transform.AFFINE, (1, s, 0, 0, 1, 0))
    if name == "shear_y":
        return im.transform(im.size, Image.Transform.AFFINE, (1, 0, 0, s, 1, 0))
    if name == "translate_x_abs":
        return im.transform(im.size, Image.Transform.AFFINE, (1, 0, s, 0, 1, 0))
    if name == "translate_y_abs":
        return im.transform(im.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, s))
    if name == "posterize":
        return ImageOps.posterize(im, max(1, int(v)))
    if name == "solarize":
        return ImageOps.solarize(im, v)
    if name == "solarize_add":
        arr = np.clip(np.asarray(im).astype(np.int64) + v, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(arr), 128)
    if name in ("color", "contrast", "brightness", "sharpness"):
        return dict(ENHANCE)[name](im).enhance(v)
    if name == "invert":
        return ImageOps.invert(im)
    if name == "cutout_abs":
        w, h = im.size
        x0, y0 = int(max(0, cx - v / 2.0)), int(max(0, cy - v / 2.0))
        out = im.copy()
        ImageDraw.Draw(out).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), (125, 123, 114))
        return out
    return getattr(ImageOps, name)(im)


@pytest.mark.parametrize("n, m", [(1, 3), (2, 1), (1, 9), (3, 30)])
def test_gjs_randaugment_equals_a_per_image_pil_replay_of_its_draws(n, m):
    x = sample_images(b=160, seed=n + m)
    policy = A.GJSRandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=n, m=m)
    draw = policy.draw(len(x), gen(m), x.device, 32, 32)
    ours = policy.apply(x, draw)
    values = A.gjs_randaugment_values(m)
    expected = []
    for i, img in enumerate(x):  # the reference, one image at a time
        im = to_pil(img)
        for r in range(n):
            name = A.GJS_RANDAUGMENT_OPS[int(draw.ops[r, i])]
            im = pil_gjs_op(im, name, values[name], bool(draw.negative[r, i]), float(draw.cutout_x[r, i]),
                            float(draw.cutout_y[r, i]))
        expected.append(from_pil(im))
    assert_close_to_pil(ours, torch.stack(expected), max_diff=0, max_frac=0.0)


def test_gjs_randaugment_ops_change_images_far_more_than_torchvisions_at_m3():
    # The measurement (41.9 vs 10.3 grey levels on 256 CIFAR-10 images), as a property, on smooth images
    # like photos (4 x 4 random colours upsampled): the mean absolute pixel change of one op at M = 3.
    low = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (256, 3, 4, 4)).astype(np.float32))
    x = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).round().to(torch.uint8)
    gjs = A.GJSRandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=1, m=3)
    tv = A.RandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=1, m=3)
    change_gjs = (gjs.apply(x, gjs.draw(256, gen(0), x.device, 32, 32)).float() - x.float()).abs().mean()
    change_tv = (tv.apply(x, *tv.draw(256, gen(0), x.device)).float() - x.float()).abs().mean()
    assert float(change_gjs) > 2.5 * float(change_tv), (float(change_gjs), float(change_tv))


def test_gjs_randaugment_draws_cover_ops_signs_and_cutout_centres():
    b = 16_000
    policy = A.GJSRandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=1, m=3)
    draw = policy.draw(b, gen(1), torch.device("cpu"), 24, 40)
    counts = torch.bincount(draw.ops[0], minlength=16).double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    assert abs(draw.negative.double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / b)
    # np.random.uniform(w) = uniform between w and 1: centres in (1, W], mean (W + 1) / 2
    assert float(draw.cutout_x.min()) > 1.0 and float(draw.cutout_x.max()) <= 40.0
    assert float(draw.cutout_y.min()) > 1.0 and float(draw.cutout_y.max()) <= 24.0
    assert float(draw.cutout_x.mean()) == pytest.approx(20.5, abs=0.3)


def test_cutout_abs_is_pils_inclusive_rectangle_clipped_at_the_border():
    x = torch.zeros((3, 3, 10, 10), dtype=torch.uint8)
    out = A.cutout_abs(x, 4.0, torch.tensor([5.0, 1.5, 9.9]), torch.tensor([5.0, 1.5, 9.9]))
    painted = out[:, 0] == 125
    # image 0: x0 = int(5 - 2) = 3, columns 3..7 (inclusive): a 5 x 5 square
    assert painted[0].sum() == 25 and bool(painted[0, 3:8, 3:8].all())
    # image 1: x0 = int(max(0, -0.5)) = 0: columns 0..4; image 2: x0 = 7, columns 7..9 (clipped): 3 x 3
    assert painted[1].sum() == 25 and bool(painted[1, :5, :5].all())
    assert painted[2].sum() == 9 and bool(painted[2, 7:, 7:].all())
    assert out[0, :, 5, 5].tolist() == [125, 123, 114]
    grey = A.cutout_abs(torch.zeros((1, 1, 10, 10), dtype=torch.uint8), 4.0, torch.tensor([5.0]),
                        torch.tensor([5.0]))
    assert int(grey[0, 0, 5, 5]) == 123  # PIL's convert("L") of (125, 123, 114)


def test_gjs_randaugment_pixel_values_scale_with_small_images():
    policy = A.GJSRandAugment(A.CIFAR10_MEAN, A.CIFAR10_STD, n=1, m=3)
    assert policy.pixel_scaled_values(32, 32) == A.gjs_randaugment_values(3)
    small = policy.pixel_scaled_values(8, 8)
    assert small["translate_x_abs"] == 2.5 and small["cutout_abs"] == 1.0 and small["solarize"] == 25.6
    assert policy.pixel_scaled_values(64, 48)["translate_y_abs"] == 15.0
    # an 8-px digit translated by the scaled 2.5 px keeps its content (10 px would leave it black)
    x = torch.full((1, 1, 8, 8), 200, dtype=torch.uint8)
    draw = A.GJSRandAugmentDraw(torch.tensor([[14]]), torch.tensor([[False]]), torch.tensor([[4.0]]),
                                torch.tensor([[4.0]]))
    assert A.GJS_RANDAUGMENT_OPS[14] == "translate_x_abs"
    out = policy.apply(x, draw)
    # PIL NEAREST reads column floor(2.5 + 0.5 + j) = j + 3: columns 0-4 keep the image, 5-7 are the fill
    assert bool((out[..., :5] == 200).all()) and bool((out[..., 5:] == 0).all())


def test_gjs_randaugment_policy_is_ops_then_crop_flip_normalise_cutout():
    batch = sample_images(b=32).permute(0, 2, 3, 1)
    pipe = A.AugmentPipeline("randaugment_gjs", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, n=1, m=3, cutout_size=16)
    out = pipe(batch, gen(5))
    g = gen(5)
    policy = pipe.policy
    x = policy.apply(A.channels_first(batch), policy.draw(32, g, batch.device, 32, 32))
    x = A.random_crop_flip(x, 4, g, mode="constant", p=0.5)
    x = A.cutout(A.to_float_normalized(x, A.CIFAR10_MEAN, A.CIFAR10_STD), 16, g)
    assert torch.equal(out, x)


# --- AugMix -----------------------------------------------------------------------------------------------

def pil_augmix_op(im: Image.Image, name: str, level: float, negative: bool) -> Image.Image:
    """google-research/augmix ``augmentations.<name>(img, severity)`` with its level and sign given, written out
    with PIL (int_parameter truncates; geometry BILINEAR; IMAGE_SIZE = the image's size)."""
    def int_parameter(maxval):
        return int(level * maxval / 10)

    def sign(v):
        return -v if negative else v

    w, h = im.size
    if name == "autocontrast":
        return ImageOps.autocontrast(im)
    if name == "equalize":
        return ImageOps.equalize(im)
    if name == "posterize":
        return ImageOps.posterize(im, 4 - int_parameter(4))
    if name == "solarize":
        return ImageOps.solarize(im, 256 - int_parameter(256))
    if name == "rotate":
        return im.rotate(sign(int_parameter(30)), resample=BILINEAR)
    affine = {"shear_x": lambda v: (1, v, 0, 0, 1, 0), "shear_y": lambda v: (1, 0, 0, v, 1, 0),
              "translate_x": lambda v: (1, 0, v, 0, 1, 0), "translate_y": lambda v: (1, 0, 0, 0, 1, v)}
    if name in ("shear_x", "shear_y"):
        return im.transform((w, h), Image.Transform.AFFINE, affine[name](sign(level * 0.3 / 10)), resample=BILINEAR)
    if name in ("translate_x", "translate_y"):
        size = w if name == "translate_x" else h
        return im.transform((w, h), Image.Transform.AFFINE, affine[name](sign(int_parameter(size / 3))),
                            resample=BILINEAR)
    return dict(ENHANCE)[name](im).enhance(level * 1.8 / 10 + 0.1)  # all_ops


@pytest.mark.parametrize("options", [{}, {"all_ops": True, "depth": 2, "width": 2, "severity": 10}])
def test_augmix_equals_a_per_image_pil_replay_of_its_draws(options):
    x = sample_images(b=60, seed=3)
    policy = A.AugMix(A.CIFAR10_MEAN, A.CIFAR10_STD, **options)
    d = policy.draw(len(x), gen(7), x.device)
    ours = policy.apply(x, d)
    assert ours.dtype == torch.float32 and ours.shape == x.shape
    expected = []
    for j, img in enumerate(x):  # AugMix's aug(), one image at a time, with the drawn values
        mix = np.zeros((3, 32, 32), dtype=np.float32)
        for i in range(policy.width):
            im = to_pil(img)
            for s in range(int(d.depth[i, j])):
                im = pil_augmix_op(im, policy.op_names[int(d.ops[i, s, j])], float(d.levels[i, s, j]),
                                   bool(d.negative[i, s, j]))
            mix += float(d.weights[j, i]) * from_pil(im).numpy().astype(np.float32)
        m = float(d.mix[j])
        expected.append((1 - m) * img.numpy().astype(np.float32) + m * mix)
    diff = (ours - torch.from_numpy(np.stack(expected))).abs()
    assert float((diff > 1e-3).float().mean()) < 0.002 and float(diff.max()) < 255


def test_augmix_policy_is_flip_crop_then_mixture_then_normalise_by_default():
    # AugMix's own CIFAR code: RandomHorizontalFlip + RandomCrop(32, padding=4) in the data set's transform, then
    # aug() on the cropped image: the crop/flip draws come first, on the uint8 image.
    batch = sample_images(b=16).permute(0, 2, 3, 1)
    pipe = A.AugmentPipeline("augmix", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="constant")
    assert pipe.policy.crop_flip_order == "before"
    out = pipe(batch, gen(4))
    g = gen(4)
    policy = pipe.policy
    x = A.random_crop_flip(A.channels_first(batch), 4, g, mode="constant", p=0.5)
    mixed = policy.apply(x, policy.draw(16, g, batch.device))
    mean, std = torch.tensor(A.CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(A.CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (mixed / 255 - mean) / std, atol=1e-5, rtol=0)
    assert out.dtype == torch.float32 and out.shape == (16, 3, 32, 32)
    # the padding is black before the ops run: an image whose crop shifted it has a black band that the mixture
    # then changes like any pixel (autocontrast/solarize...), unlike "after", where the band stays exactly black
    after = A.AugmentPipeline("augmix", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="constant",
                              crop_flip="after")
    assert not torch.equal(after(batch, gen(4)), out)


def test_augmix_policy_crop_flip_after_is_mixture_then_crop_flip_normalise():
    batch = sample_images(b=16).permute(0, 2, 3, 1)
    pipe = A.AugmentPipeline("augmix", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="reflect",
                             crop_flip="after")
    out = pipe(batch, gen(4))
    g = gen(4)
    policy = pipe.policy
    mixed = policy.apply(A.channels_first(batch), policy.draw(16, g, batch.device))
    mixed = A.random_crop_flip(mixed, 4, g, mode="reflect", p=0.5)
    mean, std = torch.tensor(A.CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(A.CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (mixed / 255 - mean) / std, atol=1e-5, rtol=0)


def test_augmix_draws():
    b = 20_000
    policy = A.AugMix(A.CIFAR10_MEAN, A.CIFAR10_STD, severity=3, width=3, depth=-1, alpha=1.0)
    d = policy.draw(b, gen(1), torch.device("cpu"))
    # Dirichlet(1, 1, 1) weights: on the simplex, mean 1/3, each marginal Beta(1, 2)
    assert d.weights.shape == (b, 3) and bool((d.weights >= 0).all())
    torch.testing.assert_close(d.weights.sum(1), torch.ones(b), atol=1e-6, rtol=0)
    assert torch.allclose(d.weights.mean(0).double(), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01)
    assert stats.kstest(d.weights[:, 0].numpy(), stats.beta(1, 2).cdf).pvalue > 1e-4
    # Beta(1, 1) mixing coefficient: uniform on [0, 1], mean 0.5
    assert bool(((d.mix >= 0) & (d.mix <= 1)).all()) and abs(d.mix.mean().item() - 0.5) < 0.01
    assert stats.kstest(d.mix.numpy(), "uniform").pvalue > 1e-4
    # depth uniform in 1..3; ops uniform over the 9; levels uniform in [0.1, severity); signs 1/2
    for counts, k in ((torch.bincount(d.depth.flatten() - 1), 3), (torch.bincount(d.ops.flatten()), 9)):
        assert len(counts) == k and stats.chisquare(counts.numpy()).pvalue > 1e-4
    levels = d.levels.flatten().numpy()
    assert levels.min() >= 0.1 and levels.max() < 3
    assert stats.kstest(levels, stats.uniform(0.1, 2.9).cdf).pvalue > 1e-4
    assert abs(d.negative.double().mean().item() - 0.5) < 0.005


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
def test_gamma_dirichlet_beta_samplers_follow_their_distributions(alpha):
    n = 10_000
    log_g = A.sample_log_gamma(alpha, n, gen(int(alpha * 10)))
    assert stats.kstest(log_g.exp().numpy(), stats.gamma(alpha).cdf).pvalue > 1e-4
    w = A.sample_dirichlet(alpha, n, 4, gen(1), torch.device("cpu"))
    torch.testing.assert_close(w.sum(1), torch.ones(n), atol=1e-6, rtol=0)
    assert stats.kstest(w[:, 2].numpy(), stats.beta(alpha, 3 * alpha).cdf).pvalue > 1e-4
    m = A.sample_beta(alpha, alpha, n, gen(2), torch.device("cpu"))
    assert bool(((m >= 0) & (m <= 1)).all()) and abs(m.mean().item() - 0.5) < 0.02
    assert stats.kstest(m.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-4


def test_samplers_are_reproducible_from_the_generator_and_finite_for_tiny_alpha():
    g1, g2 = gen(3), gen(3)
    assert torch.equal(A.sample_dirichlet(1.0, 50, 3, g1, torch.device("cpu")),
                       A.sample_dirichlet(1.0, 50, 3, g2, torch.device("cpu")))
    assert torch.equal(g1.get_state(), g2.get_state())  # the same number of draws consumed
    w = A.sample_dirichlet(0.01, 1000, 3, gen(), torch.device("cpu"))  # Gamma(0.01) underflows, its log does not
    assert bool(torch.isfinite(w).all()) and torch.allclose(w.sum(1), torch.ones(1000))
    with pytest.raises(ConfigError):
        A.sample_log_gamma(0.0, 5, gen())


def test_augmix_gives_images_of_one_batch_different_mixtures():
    same = sample_images()[:1].expand(32, -1, -1, -1).permute(0, 2, 3, 1).contiguous()
    pipe = A.AugmentPipeline("augmix", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding=0, flip_p=0.0)
    out = pipe(same, gen(6))
    assert len({tuple(o.flatten()[::97].tolist()) for o in out}) == 32


# --- both policies: reproducibility, layout, specs --------------------------------------------------------

POLICY_SPECS = ["randaugment(n=1, m=3, cutout_size=16)", "randaugment", "randaugment_gjs(n=1, m=3, cutout_size=16)",
                "randaugment_gjs(n=2, m=30)", "augmix(severity=3, width=3)", "augmix(crop_flip=after)",
                "augmix(depth=2, alpha=0.5, all_ops=true)"]


def pipeline(spec: str, **extra) -> A.AugmentPipeline:
    parsed = A.parse_view_spec(spec)
    return A.AugmentPipeline(parsed.policy, A.CIFAR10_MEAN, A.CIFAR10_STD, 32, **parsed.options, **extra)


@pytest.mark.parametrize("spec", POLICY_SPECS)
def test_policy_output_and_reproducibility(spec):
    batch = sample_images(b=24).permute(0, 2, 3, 1)
    pipe = pipeline(spec)
    g = gen(8)
    out = pipe(batch, g)
    assert out.dtype == torch.float32 and out.shape == (24, 3, 32, 32) and out.device == batch.device
    assert out.is_contiguous() and bool(torch.isfinite(out).all())
    black, white = (-torch.tensor(A.CIFAR10_MEAN) / torch.tensor(A.CIFAR10_STD)), \
        ((1 - torch.tensor(A.CIFAR10_MEAN)) / torch.tensor(A.CIFAR10_STD))
    per_channel = out.transpose(0, 1).reshape(3, -1)
    assert bool((per_channel.amin(1) >= black - 1e-5).all() and (per_channel.amax(1) <= white + 1e-5).all())
    # the same generator state gives the same output; the next draw differs; the global RNG is not used
    state = g.get_state()
    torch.manual_seed(123)
    second = pipe(batch, g)
    g.set_state(state)
    torch.manual_seed(456)
    assert torch.equal(pipe(batch, g), second)
    assert not torch.equal(second, out)
    assert torch.equal(pipe(batch, gen(8)), out)
    assert torch.equal(batch, sample_images(b=24).permute(0, 2, 3, 1))  # the stored batch is untouched


def test_view_specs_parse_and_build():
    spec = A.parse_view_spec("randaugment(n=1, m=3, cutout_size=16)")
    assert spec == A.ViewSpec("randaugment", {"n": 1, "m": 3, "cutout_size": 16})
    assert A.parse_view_spec("augmix(severity=3, width=3)") == A.ViewSpec("augmix", {"severity": 3, "width": 3})
    assert A.policy_options("randaugment") == {"n", "m", "num_bins", "padding", "padding_mode", "flip_p",
                                               "cutout_size"}
    assert A.policy_options("augmix") == {"severity", "width", "depth", "alpha", "all_ops", "padding",
                                          "padding_mode", "flip_p", "crop_flip"}
    assert A.policy_options("randaugment_gjs") == {"n", "m", "padding", "padding_mode", "flip_p", "cutout_size"}
    views = A.build_views({"student": ("randaugment(n=1, m=3, cutout_size=16)", 1),
                           "teacher": ("augmix(severity=3, width=3)", 1)},
                          A.CIFAR10_MEAN, A.CIFAR10_STD, 32, A.CommonOptions(padding_mode="constant"))
    student, teacher = views["student"].policy, views["teacher"].policy
    assert (student.n, student.m, student.weak.padding, student.weak.cutout_size) == (1, 3, 4, 16)
    assert (teacher.severity, teacher.width, teacher.depth, teacher.alpha) == (3, 3, -1, 1.0)
    assert views["teacher"].config()["severity"] == 3
    outs = [v(sample_images(b=4).permute(0, 2, 3, 1), gen()) for v in views.values()]
    assert all(o.shape == (4, 3, 32, 32) for o in outs)


@pytest.mark.parametrize("spec, option", [
    ("randaugment(k=2)", r"option\(s\) k;"), ("randaugment(n=-1)", "option n "), ("randaugment(m=31)", "option m "),
    ("randaugment(m=2.5)", "option m "), ("randaugment(num_bins=1)", "option num_bins "),
    ("randaugment(cutout_size=-3)", "cutout_size "), ("randaugment(padding_mode=wrap)", "padding mode "),
    ("augmix(severity=0)", "option severity "), ("augmix(severity=11)", "option severity "),
    ("augmix(width=0)", "option width "), ("augmix(depth=0)", "option depth "), ("augmix(alpha=-1)", "option alpha "),
    ("augmix(all_ops=maybe)", "option all_ops "), ("augmix(crop_flip=middle)", "option crop_flip "),
    ("randaugment_gjs(m=31)", "option m "), ("randaugment_gjs(m=-1)", "option m "),
    ("randaugment_gjs(n=-1)", "option n "), ("randaugment_gjs(num_bins=31)", r"option\(s\) num_bins;"), ("augmix(cutout_size=16)", r"option\(s\) cutout_size;"),
])
def test_bad_options_are_config_errors_naming_the_option(spec, option):
    with pytest.raises(ConfigError, match=option):
        parsed = A.parse_view_spec(spec)
        A.build_views({"view": (parsed, 1)}, A.CIFAR10_MEAN, A.CIFAR10_STD, 32)


def test_small_grey_images():
    batch = torch.randint(0, 256, (10, 8, 8, 1), dtype=torch.uint8, generator=gen())
    for spec in POLICY_SPECS:
        parsed = A.parse_view_spec(spec)
        options = {**parsed.options, "padding": 1}
        options.pop("cutout_size", None)
        out = A.AugmentPipeline(parsed.policy, (0.5,), (0.25,), 8, **options)(batch, gen())
        assert out.shape == (10, 1, 8, 8) and bool(torch.isfinite(out).all())


@CUDA
@pytest.mark.parametrize("spec", POLICY_SPECS)
def test_cuda_batch_with_cpu_generator_matches_cpu(spec):
    batch = sample_images(b=16).permute(0, 2, 3, 1)
    pipe = pipeline(spec)
    cpu = pipe(batch, gen(1))
    cuda = pipe(batch.cuda(), gen(1))
    assert cuda.device.type == "cuda"
    assert float(((cuda.cpu() - cpu).abs() > 1e-3).float().mean()) < 0.002


@CUDA
@pytest.mark.parametrize("spec", POLICY_SPECS)
def test_cuda_generator_is_deterministic(spec):
    batch = sample_images(b=16).permute(0, 2, 3, 1).cuda()
    pipe = pipeline(spec)
    assert torch.equal(pipe(batch, gen(1, "cuda")), pipe(batch, gen(1, "cuda")))
