"""Batched GPU/CPU augmentation: exact geometry, per-sample randomness, determinism from the generator only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisykd import augment as A
from noisykd.errors import ConfigError, DataError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def unique_images(b: int = 16, c: int = 2, h: int = 5, w: int = 7) -> torch.Tensor:
    """float64 B x C x H x W whose values are all distinct, so a window identifies its position."""
    return torch.arange(b * c * h * w, dtype=torch.float64).view(b, c, h, w)


def stored_batch(b: int = 8, h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 B x H x W x C, as the engine stores images."""
    return torch.randint(0, 256, (b, h, w, c), dtype=torch.uint8, generator=gen(seed))


def replay_offsets(seed: int, b: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop offsets random_crop draws from a fresh generator with this seed (documented draw order)."""
    g = gen(seed)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    return dy, dx


# --- crop -------------------------------------------------------------------------------------------------

def test_crop_padding_zero_is_identity():
    x = unique_images()
    assert torch.equal(A.random_crop(x, 0, gen()), x)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_crop_is_the_padded_window_at_the_drawn_offset(mode):
    x, p = unique_images(), 2
    out = A.random_crop(x, p, gen(3), mode=mode)
    padded = F.pad(x, (p, p, p, p), mode=mode)
    dy, dx = replay_offsets(3, len(x), p)
    h, w = x.shape[-2:]
    for i in range(len(x)):  # reference check, one sample at a time
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w])
    assert out.shape == x.shape and out.dtype == x.dtype


def test_crop_windows_are_contiguous_and_offsets_vary_per_sample():
    # Without replaying the generator: every output is exactly one window of its zero-padded input.
    x, p = unique_images(b=64) + 1, 3  # +1: no interior value equals the padding value 0
    out = A.random_crop(x, p, gen(5))
    padded = F.pad(x, (p, p, p, p))
    h, w = x.shape[-2:]
    found = []
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(out[i], padded[i, :, dy:dy + h, dx:dx + w])]
        assert len(hits) == 1
        found.append(hits[0])
    assert len(set(found)) > 10  # per-sample offsets, not one for the whole batch
    ys, xs = zip(*found)
    assert min(ys) == 0 and max(ys) == 2 * p and min(xs) == 0 and max(xs) == 2 * p  # full range reachable


def test_reflect_and_constant_differ_and_constant_is_black_in_uint8():
    x = torch.full((32, 1, 4, 4), 200, dtype=torch.uint8)
    const = A.random_crop(x, 2, gen(1), mode="constant")
    refl = A.random_crop(x, 2, gen(1), mode="reflect")
    assert torch.equal(refl, x)  # reflecting a constant image changes nothing
    assert set(const.unique().tolist()) == {0, 200}  # zero padding shows as black borders
    assert not torch.equal(const, refl)


def test_reflect_padding_wider_than_the_image_matches_numpy():
    x, p = unique_images(b=8, c=1, h=3, w=4), 5
    out = A.random_crop(x, p, gen(2), mode="reflect")
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    dy, dx = replay_offsets(2, len(x), p)
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i].numpy(), padded[i, :, dy[i]:dy[i] + 3, dx[i]:dx[i] + 4])


def test_crop_works_on_uint8_channels_last_views_and_small_images():
    batch = stored_batch(b=6, h=8, w=8, c=1)  # 8x8 grey digits, padding 1
    x = A.channels_first(batch)
    out = A.random_crop(x, 1, gen(4))
    padded = F.pad(x.float(), (1, 1, 1, 1))
    dy, dx = replay_offsets(4, 6, 1)
    for i in range(6):
        assert torch.equal(out[i].float(), padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8])
    assert out.dtype == torch.uint8 and out.is_contiguous()


def test_crop_rejects_bad_arguments():
    x = unique_images()
    with pytest.raises(ConfigError):
        A.random_crop(x, -1, gen())
    with pytest.raises(ConfigError):
        A.random_crop(x, 2, gen(), mode="circular")
    with pytest.raises(ConfigError):
        A.random_crop(x, 2, None)  # never falls back to the global RNG
    with pytest.raises(DataError):
        A.random_crop(x[0], 2, gen())


# --- flip -------------------------------------------------------------------------------------------------

def test_flip_p1_is_torch_flip_and_p0_is_identity():
    x = unique_images()
    assert torch.equal(A.random_flip(x, gen(), p=1.0), torch.flip(x, dims=[-1]))
    assert torch.equal(A.random_flip(x, gen(), p=0.0), x)


def test_flip_is_per_sample():
    x = unique_images(b=64)
    out = A.random_flip(x, gen(7), p=0.5)
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped ^ kept).all())  # each sample is one or the other
    assert 10 < int(flipped.sum()) < 54


def test_fused_crop_flip_equals_crop_then_flip():
    x = unique_images(b=32)
    for mode in A.PADDING_MODES:
        g1, g2 = gen(11), gen(11)
        fused = A.random_crop_flip(x, 2, g1, mode=mode, p=0.5)
        sequential = A.random_flip(A.random_crop(x, 2, g2, mode=mode), g2, p=0.5)
        assert torch.equal(fused, sequential)
        assert torch.equal(g1.get_state(), g2.get_state())  # same draws consumed


# --- cutout -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [3, 4])
def test_cutout_zeroes_exactly_a_clipped_square(size):
    b, h, w = 200, 9, 9
    x = torch.ones(b, 2, h, w)
    out = A.cutout(x, size, gen(8))
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # all channels alike
    assert bool((out[~zero] == 1).all())  # nothing else touched
    g = gen(8)
    cy, cx = torch.randint(0, h, (b,), generator=g), torch.randint(0, w, (b,), generator=g)
    full = 0
    for i in range(b):
        y0, x0 = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        expected = torch.zeros(h, w, dtype=torch.bool)
        expected[max(y0, 0):max(y0 + size, 0), max(x0, 0):max(x0 + size, 0)] = True
        assert torch.equal(zero[i, 0], expected)
        rows, cols = zero[i, 0].any(1).sum(), zero[i, 0].any(0).sum()
        assert int(zero[i, 0].sum()) == int(rows * cols) and rows <= size and cols <= size  # a rectangle
        full += int(rows == size and cols == size)
    assert full > 0  # away from the borders the square is whole
    positions = {tuple(zero[i, 0].nonzero()[0].tolist()) for i in range(b)}
    assert len(positions) > 20  # per-sample centres


def test_cutout_size_zero_is_identity_and_fill_is_configurable():
    x = torch.ones(4, 3, 6, 6)
    assert torch.equal(A.cutout(x, 0, gen()), x)
    out = A.cutout(x, 2, gen(), fill=-5.0)
    assert set(out.unique().tolist()) <= {1.0, -5.0} and bool((out == -5).any())
    assert torch.equal(x, torch.ones(4, 3, 6, 6))  # input untouched


# --- normalisation and statistics -------------------------------------------------------------------------

def test_to_float_normalized_values():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = (0.5, 0.2, 0.1), (0.25, 0.5, 2.0)
    out = A.to_float_normalized(x, mean, std)
    expected = (torch.tensor([0.0, 0.2, 1.0]) - torch.tensor(mean)) / torch.tensor(std)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0], expected, atol=1e-6, rtol=0)
    with pytest.raises(DataError):
        A.to_float_normalized(x.float(), mean, std)
    with pytest.raises(DataError):
        A.to_float_normalized(x, (0.5, 0.5), (1.0, 1.0))


def test_eval_transform_is_channels_first_normalised_and_not_random():
    batch = stored_batch()
    pipe = A.AugmentPipeline("weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32)
    out = pipe.eval_transform(batch)
    ref = (batch.permute(0, 3, 1, 2).float() / 255 - torch.tensor(A.CIFAR10_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(A.CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert out.is_contiguous()
    assert torch.equal(out, pipe.eval_transform(batch))


def test_constants_match_methods_doc():
    assert A.CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and A.CIFAR10_STD == (0.2023, 0.1994, 0.2010)
    assert A.CIFAR100_MEAN == (0.5071, 0.4867, 0.4408) and A.CIFAR100_STD == (0.2675, 0.2565, 0.2761)


def test_dataset_stats_known_values_and_chunking():
    images = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    images[..., 0] = 255  # channel 0: all 1.0
    images[:2, ..., 1] = 255  # channel 1: half 0, half 1 -> mean 0.5, std 0.5
    images[..., 2] = 51  # channel 2: all 0.2
    for chunk in (1, 3, 100):
        mean, std = A.dataset_stats(images, chunk_size=chunk)
        np.testing.assert_allclose(mean, (1.0, 0.5, 0.2), atol=1e-12)
        np.testing.assert_allclose(std, (0.0, 0.5, 0.0), atol=1e-12)
    rand = np.random.default_rng(0).integers(0, 256, (37, 5, 6, 3), dtype=np.uint8)
    mean, std = A.dataset_stats(torch.from_numpy(rand), chunk_size=8)
    np.testing.assert_allclose(mean, rand.mean(axis=(0, 1, 2)) / 255, atol=1e-12)
    np.testing.assert_allclose(std, rand.std(axis=(0, 1, 2)) / 255, atol=1e-12)
    with pytest.raises(DataError):
        A.dataset_stats(rand.astype(np.float32))
    with pytest.raises(DataError):
        A.dataset_stats(rand[0])


# --- policies and pipeline --------------------------------------------------------------------------------

def test_registry_has_the_builtin_policies_and_checks_names():
    assert {"none", "weak", "weak_cutout", "two_weak"} <= set(A.available_policies())
    with pytest.raises(ConfigError):
        A.get_policy("nope", mean=A.CIFAR10_MEAN, std=A.CIFAR10_STD)
    with pytest.raises(ConfigError):
        A.get_policy("weak", mean=A.CIFAR10_MEAN, std=A.CIFAR10_STD, no_such_option=1)
    with pytest.raises(ConfigError):
        A.register_policy("weak")(lambda **kw: None)


def test_policy_options_lists_what_each_policy_accepts():
    assert A.policy_options("none") == frozenset()
    assert A.policy_options("weak") == {"padding", "padding_mode", "flip_p"}
    assert A.policy_options("weak_cutout") == {"padding", "padding_mode", "flip_p", "cutout_size"}
    assert A.policy_options("two_weak") == A.policy_options("weak")
    with pytest.raises(ConfigError):
        A.policy_options("nope")
    with pytest.raises(ConfigError):  # options of a **kwargs factory cannot be read: must be declared
        A.register_policy("test_kwargs")(lambda *, mean, std, image_size=None, **kw: None)
    assert "test_kwargs" not in A.available_policies()  # nothing half-registered


def test_custom_policy_registration():
    @A.register_policy("test_flip_only", overwrite=True)
    def _flip_only(*, mean, std, image_size=None):
        return A.CropFlipCutout(mean, std, padding=0, flip_p=1.0)

    try:
        batch = stored_batch()
        pipe = A.AugmentPipeline("test_flip_only", A.CIFAR10_MEAN, A.CIFAR10_STD, 32)
        assert torch.equal(pipe(batch, gen()), pipe.eval_transform(batch).flip(-1))
    finally:
        A.POLICIES.unregister("test_flip_only")  # keep the registry as other tests expect it


def test_weak_policy_shapes_and_padding_mode_option():
    batch = stored_batch()
    for mode in ("constant", "reflect"):
        pipe = A.AugmentPipeline("weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode=mode)
        out = pipe(batch, gen())
        assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    const = A.AugmentPipeline("weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, flip_p=0.0)
    white = torch.full((16, 32, 32, 3), 255, dtype=torch.uint8)
    out = const(white, gen(1))
    black = (-torch.tensor(A.CIFAR10_MEAN) / torch.tensor(A.CIFAR10_STD)).view(1, 3, 1, 1)
    border = ~torch.isclose(out, const.eval_transform(white))
    assert bool(border.any())
    torch.testing.assert_close(torch.where(border, out, black), black.expand_as(out))  # padding is black


def test_weak_policy_equals_the_ops_it_is_made_of():
    batch = stored_batch()
    pipe = A.AugmentPipeline("weak_cutout", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="reflect")
    g = gen(9)
    x = A.random_crop(A.channels_first(batch), 4, g, mode="reflect")
    x = A.random_flip(x, g, p=0.5)
    x = A.cutout(A.to_float_normalized(x, A.CIFAR10_MEAN, A.CIFAR10_STD), 16, g)
    torch.testing.assert_close(pipe(batch, gen(9)), x, atol=0, rtol=0)


def test_small_images_with_padding_one():
    batch = stored_batch(b=10, h=8, w=8, c=1)
    pipe = A.AugmentPipeline("weak_cutout", (0.5,), (0.25,), 8, padding=1, cutout_size=3)
    out = pipe(batch, gen())
    assert out.shape == (10, 1, 8, 8)


def test_same_seed_same_output_different_seed_different_output():
    batch = stored_batch(b=32)
    pipe = A.AugmentPipeline("weak_cutout", A.CIFAR10_MEAN, A.CIFAR10_STD, 32)
    assert torch.equal(pipe(batch, gen(1)), pipe(batch, gen(1)))
    assert not torch.equal(pipe(batch, gen(1)), pipe(batch, gen(2)))


def test_generator_state_restore_replays_the_batch():
    batch = stored_batch()
    pipe = A.AugmentPipeline("two_weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32)
    g = gen(4)
    pipe(batch, g)
    state = g.get_state()
    first = pipe(batch, g)
    g.set_state(state)
    for a, b in zip(first, pipe(batch, g)):
        assert torch.equal(a, b)


def test_global_rng_is_neither_used_nor_changed():
    batch = stored_batch()
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        for name in A.available_policies():
            pipe = A.AugmentPipeline(name, A.CIFAR10_MEAN, A.CIFAR10_STD, 32)
            outs.append((name, pipe(batch, gen(0))))
        assert torch.equal(torch.get_rng_state(), before)
    half = len(outs) // 2
    for (name, a), (_, b) in zip(outs[:half], outs[half:]):
        a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
        assert all(torch.equal(u, v) for u, v in zip(a, b)), name


def test_multi_view_policy_returns_independent_views():
    batch = stored_batch(b=16)
    pipe = A.AugmentPipeline("two_weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="reflect")
    views = pipe(batch, gen(5))
    assert pipe.num_views == 2 and isinstance(views, tuple) and len(views) == 2
    assert all(v.shape == (16, 3, 32, 32) for v in views)
    assert not torch.equal(views[0], views[1])
    # The views are consecutive independent draws of the weak policy from the one generator.
    weak = A.AugmentPipeline("weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="reflect")
    g = gen(5)
    assert torch.equal(views[0], weak(batch, g)) and torch.equal(views[1], weak(batch, g))


def test_multi_view_of_mixed_policies_flattens():
    mv = A.MultiView([A.NormalizeOnly(A.CIFAR10_MEAN, A.CIFAR10_STD),
                      A.get_policy("two_weak", mean=A.CIFAR10_MEAN, std=A.CIFAR10_STD)])
    views = mv(stored_batch(), gen())
    assert mv.num_views == 3 and len(views) == 3


def test_pipeline_checks_its_input_and_reports_config():
    pipe = A.AugmentPipeline("weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding=2)
    batch = stored_batch()
    with pytest.raises(DataError):
        pipe(batch.permute(0, 3, 1, 2), gen())  # channels-first input is refused, not misread
    with pytest.raises(DataError):
        pipe(batch.float(), gen())
    with pytest.raises(ConfigError):
        pipe(batch, None)
    with pytest.raises(ConfigError):
        A.AugmentPipeline("weak", A.CIFAR10_MEAN, (0.2, 0.0, 0.2), 32)
    assert pipe.config()["padding"] == 2 and pipe.config()["policy"] == "weak"


def test_channels_last_output_option():
    pipe = A.AugmentPipeline("weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, channels_last=True)
    out = pipe(stored_batch(), gen())
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_global_rng_from_is_reproducible_and_restores_the_global_state():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with A.global_rng_from(gen(3)):
        a = torch.rand(5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    with A.global_rng_from(gen(3)):
        b = torch.rand(5)
    assert torch.equal(a, b)


# --- GPU --------------------------------------------------------------------------------------------------

@CUDA
def test_cuda_batch_with_cpu_generator_matches_cpu():
    batch = stored_batch(b=16)
    pipe = A.AugmentPipeline("weak_cutout", A.CIFAR10_MEAN, A.CIFAR10_STD, 32, padding_mode="reflect")
    cpu = pipe(batch, gen(1))
    cuda = pipe(batch.cuda(), gen(1))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-6, rtol=0)


@CUDA
def test_cuda_generator_is_deterministic():
    batch = stored_batch(b=16).cuda()
    pipe = A.AugmentPipeline("two_weak", A.CIFAR10_MEAN, A.CIFAR10_STD, 32)
    a, b = pipe(batch, gen(1, "cuda")), pipe(batch, gen(1, "cuda"))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
