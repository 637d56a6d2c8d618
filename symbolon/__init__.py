"""Symbolon: symbol storage and download, symbolication and crash collection in one server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("symbolon")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
