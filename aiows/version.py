"""The version of aiows: a leaf that every module may import."""

__version__ = "0.1.0"
