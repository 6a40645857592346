"""How far a colour hint leaks across an edge, and what the hints cost.

    python benchmarks/hint_edges.py

A bright disc (L* 80, radius 48 px) on a dark ground (L* 20) at a 240x160 working size, a blue
hint `inside` px within the disc's edge (on the line through its centre). Prints, for each
distance, the largest and the mean a*b* chroma the hint leaves outside the disc (beyond 4 px
from its edge: the model's own colour there is nothing, so all of it is leak), the smallest
chroma inside (how far it fills its own surface), and the time `apply_hints` takes for two
hints at 256 px on a random L* (3 runs; in-process, so `GOMP_SPINCOUNT=1000` matters on a busy
machine).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.hints import Hint, apply_hints, parse_hint  # noqa: E402


def main() -> None:
    h, w = 160, 240
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r2 = (xx - 120) ** 2 + (yy - 80) ** 2
    L = torch.where(r2 < 48**2, 80.0, 20.0)[None]
    outside, inside_disc = r2 >= 52**2, r2 < 44**2
    print("| hint inside the edge, px | leak outside, max | leak outside, mean | chroma inside, min |")
    print("|---:|---:|---:|---:|")
    for inside in (1, 2, 3, 6, 20):
        hint = Hint(120 + 48 - inside, 80, False, (0, 0, 255), text="blue")
        chroma = apply_hints(torch.zeros(2, h, w), L, [hint]).norm(dim=0)
        print(f"| {inside} | {chroma[outside].max():.2f} | {chroma[outside].mean():.3f} | {chroma[inside_disc].min():.1f} |")
    L256, ab = torch.rand(1, 256, 256) * 100, torch.zeros(2, 256, 256)
    hints = [parse_hint(t) for t in ("45%,80%:#d9633c", "5%,55%:#5f091a")]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        apply_hints(ab, L256, hints)
        times.append(time.perf_counter() - start)
    print("two hints at 256 px: " + " / ".join(f"{t:.3f}" for t in times) + " s")


if __name__ == "__main__":
    main()
