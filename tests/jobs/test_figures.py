"""The figures' colours: one per series, never repeated, however many series a grid has."""
import pytest

from jobs.figures import distinct_colours


@pytest.mark.parametrize("n", [3, 10, 12, 20, 31])
def test_every_series_has_a_colour_of_its_own(n):
    labels = [f"model {i}" for i in range(n)]
    colours = distinct_colours(labels)
    assert list(colours) == labels
    assert len(set(colours.values())) == n


def test_a_repeated_label_keeps_one_colour():
    colours = distinct_colours(["naive", "sdft", "naive"])
    assert list(colours) == ["naive", "sdft"] and colours["naive"] != colours["sdft"]
