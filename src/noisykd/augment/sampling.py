"""Random draws for the augmentation policies, all from the ``torch.Generator`` passed in (never the global RNG).

Integers, Bernoulli and uniform draws on the generator's device, moved to the batch's; Gamma / Dirichlet / Beta
samplers (AugMix's mixing weights, MODUL's mixup); :func:`global_rng_from` for libraries that only draw from the
global RNG.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

from ..errors import ConfigError


# --------------------------------------------------------------------------------------------------------
# Random draws (all from the generator passed in)
# --------------------------------------------------------------------------------------------------------

def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ConfigError("augmentation needs an explicit torch.Generator (it never uses the global RNG), "
                          f"got {type(generator).__name__}")
    return generator


def _randint(high: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """int64 tensor of ``size`` values uniform in [0, high), drawn on the generator's device, on ``device``."""
    draw = torch.randint(0, high, (size,), generator=generator, device=generator.device)
    return draw.to(device, non_blocking=True)


def _bernoulli(p: float, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """bool tensor of ``size`` values, each True with probability p (p=1 always, p=0 never: rand < 1)."""
    draw = torch.rand((size,), generator=generator, device=generator.device) < p
    return draw.to(device, non_blocking=True)


def _uniform(size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """float64 tensor of ``size`` values uniform in [0, 1), drawn on the generator's device, on ``device``."""
    draw = torch.rand((size,), generator=generator, device=generator.device, dtype=torch.float64)
    return draw.to(device, non_blocking=True)


_GAMMA_BLOCK = 4  # Marsaglia-Tsang candidates drawn per value at once (each accepted with probability > 0.95)


def sample_log_gamma(shape: float, size: int, generator: torch.Generator) -> torch.Tensor:
    """log of ``size`` Gamma(shape, 1) samples, float64 on the generator's device, drawn from ``generator`` only.

    Why not ``torch._standard_gamma`` / ``torch.distributions``: they take no generator (global RNG only), so a
    run could not be replayed from its generator state. This is Marsaglia & Tsang (2000): d = a - 1/3,
    c = 1/sqrt(9d); with z ~ N(0, 1), u ~ U(0, 1) and v = (1 + cz)^3, accept d*v when v > 0 and
    log u < z^2/2 + d - dv + d log v. Vectorised: every round draws ``_GAMMA_BLOCK`` candidates (normals, then
    uniforms) for all ``size`` values and each value takes its first accepted one; rounds repeat (rarely) until all
    are accepted, so the number of draws is a function of the generator state alone and replays exactly. For
    shape < 1: Gamma(a) = Gamma(a + 1) * U^(1/a), with the extra U (size values, in (0, 1]) drawn last.
    Returned as a log so that tiny shapes cannot underflow to 0 (log Dirichlet / Beta stay finite).
    """
    if not shape > 0 or not math.isfinite(shape):
        raise ConfigError(f"a Gamma shape must be a positive finite number, got {shape!r}")
    gdev = generator.device
    boost = shape < 1
    a = shape + 1.0 if boost else float(shape)
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.zeros(size, dtype=torch.float64, device=gdev)
    done = torch.zeros(size, dtype=torch.bool, device=gdev)
    while not bool(done.all()):  # one round almost always suffices: a sync per round, not per value
        z = torch.randn((_GAMMA_BLOCK, size), generator=generator, device=gdev, dtype=torch.float64)
        u = torch.rand((_GAMMA_BLOCK, size), generator=generator, device=gdev, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        log_v = torch.log(v.clamp(min=1e-300))  # v <= 0 is rejected below; the clamp only avoids nan
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        first = ok.to(torch.uint8).argmax(0, keepdim=True)  # the first accepted candidate (argmax: first max)
        value = math.log(d) + log_v.gather(0, first).squeeze(0)
        take = ok.any(0) & ~done
        out = torch.where(take, value, out)
        done |= take
    if boost:
        u = 1.0 - torch.rand((size,), generator=generator, device=gdev, dtype=torch.float64)  # in (0, 1]
        out = out + torch.log(u) / shape
    return out


def sample_dirichlet(alpha: float, rows: int, k: int, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """``rows`` x ``k`` float32 on ``device``, each row ~ Dirichlet(alpha * ones(k)): normalised Gamma(alpha)
    samples (a softmax of their logs), drawn with :func:`sample_log_gamma` from ``generator``."""
    log_g = sample_log_gamma(alpha, rows * k, generator).view(rows, k)
    return torch.softmax(log_g, dim=1).to(device=device, dtype=torch.float32)


def sample_beta(a: float, b: float, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``size`` float32 values ~ Beta(a, b) on ``device``: X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) (X drawn
    first), computed as sigmoid(log X - log Y)."""
    log_x = sample_log_gamma(a, size, generator)
    log_y = sample_log_gamma(b, size, generator)
    return torch.sigmoid(log_x - log_y).to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------
# RNG helpers
# --------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def global_rng_from(generator: torch.Generator, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block that uses the global RNG (e.g. kornia augmentations) reproducibly from ``generator``.

    Draws one seed from ``generator``, seeds the global CPU RNG (and the RNG of ``device`` if it is a CUDA
    device) with it inside a fork, and restores the previous global states on exit: the global RNG is left
    exactly as it was, and the block's randomness is a function of the generator state only.
    """
    generator = _check_generator(generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    cuda_index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[cuda_index] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda_index):
                torch.cuda.manual_seed(seed)
        yield
