import math

import numpy as np
import pytest
from scipy import stats

from afiqa import metrics

PRED = [0.1, 0.4, 0.35, 0.8, 0.7]
MOS = [0.2, 0.3, 0.5, 0.9, 0.6]


def test_correlations_match_scipy_and_hand_values():
    assert metrics.plcc(PRED, MOS) == pytest.approx(stats.pearsonr(PRED, MOS)[0])
    assert metrics.srocc(PRED, MOS) == pytest.approx(stats.spearmanr(PRED, MOS)[0])
    # Kendall by hand: ranks of PRED 1,3,2,5,4 vs MOS 1,2,3,5,4 -> one discordant pair of 10
    assert metrics.krocc(PRED, MOS) == pytest.approx((9 - 1) / 10)
    # Spearman by hand: d = 0,1,-1,0,0 -> 1 - 6*2/(5*24)
    assert metrics.srocc(PRED, MOS) == pytest.approx(1 - 6 * 2 / 120)


def test_errors_by_hand():
    d = np.subtract(PRED, MOS)
    assert metrics.rmse(PRED, MOS) == pytest.approx(math.sqrt(np.mean(d**2)))
    assert metrics.mae(PRED, MOS) == pytest.approx(np.mean(np.abs(d)))
    assert metrics.rmse([1, 2], [1, 4]) == pytest.approx(math.sqrt(2))


def test_logistic_plcc_straightens_a_monotonic_curve():
    x = np.linspace(-3, 3, 40)
    y = 1 / (1 + np.exp(-2 * x))  # sigmoid: monotonic but not linear
    assert metrics.logistic_plcc(x, y) > metrics.plcc(x, y)
    assert metrics.logistic_plcc(x, y) == pytest.approx(1.0, abs=1e-6)


def test_degenerate_inputs_give_nan_not_errors():
    for f in (metrics.plcc, metrics.srocc, metrics.krocc, metrics.logistic_plcc):
        assert math.isnan(f([1, 1, 1], [0.1, 0.5, 0.9]))
        assert math.isnan(f([0.3], [0.4]))
    # too few points for the 4-parameter fit: plain PLCC
    assert metrics.logistic_plcc([0.1, 0.5, 0.3], [0.2, 0.9, 0.4]) == pytest.approx(metrics.plcc([0.1, 0.5, 0.3], [0.2, 0.9, 0.4]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.plcc([1, 2], [1, 2, 3])


def test_evaluate_reports_every_metric():
    r = metrics.evaluate(PRED, MOS)
    assert set(r) == {"n", "plcc", "srocc", "krocc", "rmse", "mae", "plcc_logistic"} and r["n"] == 5


def test_quality_loss_by_hand_and_finite_on_degenerate_batches():
    import keras

    from afiqa.model.losses import QualityLoss, quality_loss

    t = np.array([0.2, 0.3, 0.5, 0.9, 0.6], "float32")
    p = np.array(PRED, "float32")
    expected = np.mean(np.abs(t - p)) + 0.5 * (1 - stats.pearsonr(p, t)[0])
    got = float(quality_loss(t, p, 1.0, 0.5))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(QualityLoss(2.0, 0.0)(t, p)) == pytest.approx(2 * np.mean(np.abs(t - p)), rel=1e-5)

    for tt, pp in ((np.full(4, 0.5), np.array([0.1, 0.2, 0.3, 0.4])), (np.array([0.1, 0.9]), np.full(2, 0.3)),
                   (np.array([0.5]), np.array([0.4]))):
        v = float(quality_loss(tt.astype("float32"), pp.astype("float32"), 1.0, 1.0))
        assert np.isfinite(v)
        assert v == pytest.approx(np.mean(np.abs(tt - pp)) + 1.0, rel=1e-4)  # PLCC term undefined -> 1


def test_quality_loss_of_several_members_is_the_mean_of_their_losses():
    from afiqa.model.losses import quality_loss

    rng = np.random.default_rng(3)
    t = rng.uniform(0, 1, 16).astype("float32")
    p = rng.uniform(0, 1, (16, 3)).astype("float32")
    each = [float(quality_loss(t, p[:, k], 1.0, 0.5)) for k in range(3)]
    assert float(quality_loss(t, p, 1.0, 0.5)) == pytest.approx(np.mean(each), rel=1e-5)
    assert float(quality_loss(t, p[:, :1], 1.0, 0.5)) == pytest.approx(each[0], rel=1e-6)  # (B, 1) == (B,)


def test_quality_loss_gradient_is_finite_on_a_constant_batch():
    import keras
    import tensorflow as tf

    from afiqa.model.losses import quality_loss

    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    p = tf.Variable(np.full(4, 0.5, "float32"))
    with tf.GradientTape() as tape:
        v = quality_loss(tf.constant([0.1, 0.2, 0.3, 0.4]), p)
    g = tape.gradient(v, p).numpy()
    assert np.isfinite(g).all()
