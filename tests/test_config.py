"""One config object, validated on creation."""

from __future__ import annotations

from dataclasses import Field, fields

import pytest

import aiows
from aiows.config import Config


def test_defaults_are_sane() -> None:
    config = Config()
    assert config.max_size == 2**20
    assert config.compression is True


@pytest.mark.parametrize("field", ["max_size", "max_queue", "write_limit", "close_timeout"])
def test_non_positive_values_are_refused(field: str) -> None:
    with pytest.raises(ValueError):
        Config(**{field: 0})


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(TypeError, match="max_sise"):
        aiows.serve(lambda ws: None, "127.0.0.1", 0, max_sise=10)  # type: ignore[arg-type, return-value]


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().max_size = 1  # type: ignore[misc]


NUMBERS = [each for each in fields(Config) if not isinstance(each.default, bool)]


@pytest.mark.parametrize("field", NUMBERS, ids=lambda field: field.name)
def test_every_number_must_be_positive_and_none_only_where_it_means_something(
    field: Field[object],
) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match=field.name):
            Config(**{field.name: bad})
    if "none" in field.metadata:
        assert getattr(Config(**{field.name: None}), field.name) is None
    else:
        with pytest.raises(ValueError, match=field.name):
            Config(**{field.name: None})


def test_every_field_says_what_it_bounds_and_who_reads_it() -> None:
    for each in fields(Config):
        assert each.metadata["help"], each.name
        assert each.metadata["side"] in ("server", "both"), each.name


def test_compression_defaults_cost_little_memory() -> None:
    """RFC 7692 windows of 4 KiB and zlib memLevel 5, as websockets uses (not 15 and 8)."""
    config = Config()
    assert (config.server_max_window_bits, config.client_max_window_bits) == (12, 12)
    assert config.compression_mem_level == 5
    assert config.compression_threshold == 128


@pytest.mark.parametrize(
    ("field", "bad", "good"),
    [
        ("server_max_window_bits", 8, 9),
        ("server_max_window_bits", 16, 15),
        ("client_max_window_bits", 8, 15),
        ("compression_mem_level", 10, 9),
    ],
)
def test_compression_parameters_have_zlibs_bounds(field: str, bad: int, good: int) -> None:
    with pytest.raises(ValueError, match=field):
        Config(**{field: bad})
    assert getattr(Config(**{field: good}), field) == good
