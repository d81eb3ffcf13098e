"""Expected calibration error and reliability bins against hand-computed values."""

import math

import pytest
import torch

from noisykd.calibration import expected_calibration_error, reliability


def logits_of(probabilities):
    return torch.tensor(probabilities, dtype=torch.float64).log()


def test_ece_of_four_predictions_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.5 (right), 0.45 (wrong); 15 bins of width 1/15:
    # 0.9 -> bin 13 (0.867, 0.933], 0.5 -> bin 7 (0.467, 0.533], 0.45 -> bin 6 (0.4, 0.467]
    # ECE = (2/4)|0.5 - 0.9| + (1/4)|1 - 0.5| + (1/4)|0 - 0.45| = (0.8 + 0.5 + 0.45) / 4 = 0.4375
    logits = logits_of([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.45, 0.35, 0.2]])
    bins = reliability(logits, torch.tensor([0, 1, 1, 2]))
    assert bins.ece == pytest.approx(0.4375)
    assert bins.count == [0] * 6 + [1, 1] + [0] * 5 + [2, 0]
    assert bins.accuracy[13] == 0.5 and bins.accuracy[7] == 1.0 and bins.accuracy[6] == 0.0
    assert bins.confidence[13] == pytest.approx(0.9) and bins.confidence[0] is None
    assert bins.edges[0] == 0 and bins.edges[-1] == 1 and len(bins.edges) == 16


def test_a_confidence_on_an_edge_belongs_to_the_bin_it_closes():
    # two classes with equal logits: confidence exactly 0.5, the upper edge of the first of two bins
    bins = reliability(torch.zeros(3, 2), torch.tensor([0, 1, 0]), n_bins=2)
    assert bins.count == [3, 0]
    assert bins.ece == pytest.approx(abs(0.5 - 2 / 3))


def test_certain_predictions_are_perfectly_or_worst_calibrated():
    certain = torch.tensor([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    assert expected_calibration_error(certain, torch.tensor([0, 1])) == pytest.approx(0, abs=1e-12)
    assert expected_calibration_error(certain, torch.tensor([1, 0])) == pytest.approx(1)
    assert reliability(certain, torch.tensor([0, 1])).count[-1] == 2  # confidence 1.0: the last bin


def test_ece_is_the_count_weighted_mean_gap_over_bins():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 10, generator=generator)
    labels = torch.randint(0, 10, (500,), generator=generator)
    bins = reliability(logits, labels, n_bins=10)
    gaps = [c / 500 * abs(a - conf) for c, a, conf in zip(bins.count, bins.accuracy, bins.confidence) if c]
    assert sum(bins.count) == 500 and bins.ece == pytest.approx(math.fsum(gaps))
    # one bin: the gap between accuracy and mean confidence over everything
    probs = torch.softmax(logits.double(), 1)
    overall = abs((probs.argmax(1) == labels).double().mean() - probs.max(1).values.mean()).item()
    assert expected_calibration_error(logits, labels, n_bins=1) == pytest.approx(overall)


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(3), torch.zeros(3, dtype=torch.long), "must be \\(N, C\\)"),
    (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), "must be \\(N, C\\)"),
    (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "no predictions"),
])
def test_bad_input_is_named(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        reliability(logits, labels)


def test_the_reliability_diagram_is_drawn(tmp_path):
    from noisykd.plots import plot_reliability

    generator = torch.Generator().manual_seed(1)
    bins = reliability(2 * torch.randn(300, 10, generator=generator), torch.randint(0, 10, (300,), generator=generator))
    plot_reliability(bins, tmp_path / "reliability.png", title="random")
    assert (tmp_path / "reliability.png").stat().st_size > 10_000
