"""A self-hosted research-paper newsletter."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("newsletter")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
