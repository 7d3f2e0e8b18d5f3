"""One integer/size parser for the command line and scenario files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.core.units import parse_int, parse_size
from vmci.errors import UsageError

MIB, GIB = 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0), ("4096", 4096), ("0x1000", 0x1000), ("0X1000", 0x1000), ("1_000", 1000), (" 12 ", 12),
        ("4k", 4096), ("4K", 4096), ("32M", 32 * MIB), ("2g", 2 * GIB), ("1T", 1 << 40),
        ("16GiB", 16 * GIB), ("16GB", 16 * GIB), ("256mib", 256 * MIB), ("512B", 512), ("512b", 512),
        ("0x10M", 16 * MIB), ("0x10MiB", 16 * MIB),
        ("0x1B", 0x1B), ("0xab", 0xAB),  # after hex digits a B is a digit, not "bytes"
    ],
)
def test_accepted_syntaxes(text: str, value: int) -> None:
    assert parse_int(text, "X") == value
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "0x", "K", "12Q", "1.5G", "0xg", "MiB", "--1"])
def test_rejected_with_the_callers_words(text: str) -> None:
    with pytest.raises(UsageError, match=r"^PADDR must be an integer \(decimal or 0x-hex\), not "):
        parse_int(text, "PADDR")
    with pytest.raises(UsageError, match=r"^not a size: .* \(use e\.g\. 268435456, '256M', '16G'\)$"):
        parse_size(text)


def test_negative_numbers() -> None:
    with pytest.raises(UsageError, match=r"^--raw-base must not be negative$"):
        parse_int("-4k", "--raw-base")
    assert parse_size(-5) == -5  # an int is taken as is; the scenario checks its range
    assert parse_size(1 << 33) == 1 << 33


@given(st.integers(min_value=0, max_value=1 << 50), st.sampled_from(["", "k", "M", "g", "T"]))
def test_round_trip(n: int, unit: str) -> None:
    shift = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[unit.lower()]
    for text in (f"{n}{unit}", f"{n:#x}{unit}", f"{n:_}{unit}"):
        assert parse_int(text, "N") == n << shift == parse_size(text)
