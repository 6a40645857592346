"""Per-image randomness: one CPU generator per image, so a result never depends on its batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def make_generators(seed: int, n: int, offset: int = 0) -> list[torch.Generator]:
    """CPU generators for images offset, offset+1, …, offset+n-1 of a run seeded with `seed`.

    Image i's generator is seeded from the pair (seed, offset + i) through numpy's SeedSequence,
    which hashes the pair into a well-mixed 64-bit seed: the same (seed, index) always gives the
    same stream, on any platform, and neighbouring pairs do not collide or correlate (as a plain
    `seed + i` would, where seed 1 image 0 equals seed 0 image 1).
    """
    if seed < 0 or offset < 0 or n < 0:
        raise ValueError("seed, offset and n must be non-negative")
    generators = []
    for index in range(offset, offset + n):
        words = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
        # torch seeds are 64-bit; keep it below 2**63 so it is valid on every torch version.
        item_seed = (int(words[0]) << 32 | int(words[1])) & (2**63 - 1)
        generators.append(torch.Generator(device="cpu").manual_seed(item_seed))
    return generators


def batch_randn(
    generators: list[torch.Generator],
    shape_per_item: tuple[int, ...] | torch.Size,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(B, *shape_per_item) standard normal noise, item b drawn from generators[b].

    Drawn on the CPU and then moved, because device RNG streams differ between backends and
    a batched draw would tie each image's noise to its position in the batch.
    """
    if not generators:
        raise ValueError("need at least one generator")
    noise = [torch.randn(tuple(shape_per_item), generator=g, dtype=dtype) for g in generators]
    return torch.stack(noise).to(device)
