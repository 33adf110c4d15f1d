"""The one best-F1 cut that the topic classifier and the pair scorer both learn their thresholds with."""

import math

import numpy as np
import pytest

from model.evaluation.thresholds import best_f1_threshold


def test_the_cut_falls_halfway_below_the_lowest_accepted_score() -> None:
    assert best_f1_threshold([0.9, 0.8, 0.7, 0.4, 0.3], [1, 1, 0, 0, 0]) == pytest.approx(0.75)


def test_a_cut_never_splits_tied_scores() -> None:
    # At 0.5 both tied items are called (F1 2/3); below 0.2 all three (F1 1/2).
    assert best_f1_threshold([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.35)


def test_one_class_has_no_cut() -> None:
    assert math.isnan(best_f1_threshold([0.1, 0.9], [1, 1]))
    assert math.isnan(best_f1_threshold([0.1, 0.9], [0, 0]))


def test_on_a_grid_equal_f1_goes_to_the_value_nearest_the_preferred_one() -> None:
    grid = np.round(np.arange(0.1, 0.91, 0.1), 3)
    prob, truth = [0.9, 0.6, 0.3], [True, True, False]
    # F1 is 1 for every cut in (0.3, 0.6]: grid values 0.4, 0.5 and 0.6.
    assert best_f1_threshold(prob, truth, grid=grid, prefer=0.5) == pytest.approx(0.5)
    assert best_f1_threshold(prob, truth, grid=grid, prefer=0.9) == pytest.approx(0.6)
    assert best_f1_threshold(prob, truth, grid=grid) == pytest.approx(0.4)
