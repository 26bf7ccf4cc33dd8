"""hlvm: hierarchical latent-variable simulator and MAE identifiability bench."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hlvm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):  # noqa: ANN202 - lazy, so that `import hlvm` imports neither torch nor matplotlib
    """``hlvm.score``: :func:`hlvm.scorecard.score`, the scorecard of any encoder on a versioned suite."""
    if name == "score":
        from hlvm.scorecard import score

        return score
    raise AttributeError(f"module 'hlvm' has no attribute {name!r}")
