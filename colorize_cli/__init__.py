"""colorize: bring colour back to black-and-white photographs.

From Python: `from colorize_cli import Colorizer` (see `colorize_cli.api`).
"""

__version__ = "0.1.0"

__all__ = ["Colorizer", "__version__"]


def __getattr__(name: str):
    # Imported on first use: the command line's --help and --version must not pay for torch.
    if name == "Colorizer":
        from .api import Colorizer

        return Colorizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
