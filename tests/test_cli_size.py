"""The one `HxW` parser of the command line (jaxseg.cli.parse_size) and the one record of
dates and versions (jaxseg.provenance.stamp)."""

import datetime

import pytest

from jaxseg import cli, provenance


@pytest.mark.parametrize(
    "text, size",
    [("512x384", (512, 384)), ("512", (512, 512)), ("64X32", (64, 32)), (" 8x8 ", (8, 8))],
)
def test_parse_size_reads_height_then_width(text, size):
    assert cli.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "512x", "x512", "512x384x2", "a x b", "0x8", "-4x8"])
def test_parse_size_names_the_bad_text(text):
    with pytest.raises(ValueError, match=f"size {text!r} is not HxW"):
        cli.parse_size(text)


def test_stamp_dates_and_names_the_versions():
    s = provenance.stamp()
    assert set(s) == {"date", "versions"}
    assert set(s["versions"]) == {"jaxseg", "jax", "jaxlib", "flax", "python"}
    assert all(isinstance(v, str) and v for v in s["versions"].values())
    when = datetime.datetime.fromisoformat(s["date"])
    assert when.tzinfo is not None and when.microsecond == 0
