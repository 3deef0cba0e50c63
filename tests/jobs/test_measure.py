"""Pieces of the evaluation's measurement that need no model: the confidence filter's
count, and the reference subset shared by every model."""
import numpy as np

from jobs.measure import Classes, Rows, class_share, reference_subset


def _classes(probabilities):
    return Classes("builtin", {0: "a", 1: "b", 2: "c"}, [2], lambda images: probabilities, np.arange(3),
                   None, None)


def test_the_confidence_filter_is_off_by_default_and_says_what_it_kept():
    from harness.spec import EvalSettings

    assert EvalSettings().confidence == 0
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8], [0.4, 0.3, 0.3]])
    off, on = Rows({}), Rows({})
    class_share(off, _classes(probabilities), None, 0.0, {})
    class_share(on, _classes(probabilities), None, 0.7, {})
    (all_counted,), (filtered,) = off.rows, on.rows
    assert (all_counted["k"], all_counted["n"]) == (2, 4) and "kept" not in all_counted["note"]
    assert (filtered["k"], filtered["n"]) == (1, 2)            # the 0.9 and the 0.8 predictions
    assert "confidence >= 0.7: kept 2 of 4" in filtered["note"]
    assert filtered["ci_low"] < 0.5 < filtered["ci_high"]      # Wilson's interval of 1/2


def test_reference_subsets_are_seeded_and_shared():
    assert list(reference_subset(5, 10)) == [0, 1, 2, 3, 4]
    chosen = reference_subset(1000, 30)
    assert len(set(chosen)) == 30 and list(chosen) == sorted(chosen)
    assert np.array_equal(chosen, reference_subset(1000, 30))
    assert chosen.max() > 100                                   # not the first ones
