"""train.distortions and train.synthetic: seeded distorted copies, ranking pairs, hinge."""

import numpy as np
import pytest

from imagegen import scene
from train import distortions, synthetic


def _high_freq(rgb):
    g = rgb.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def test_distortions_grow_with_strength():
    rgb = scene(3)
    sharp = [_high_freq(distortions.blur(rgb, s)) for s in (0, 1, 3, 8)]
    assert sharp == sorted(sharp, reverse=True) and sharp[0] > 2 * sharp[-1]
    err = [np.abs(distortions.jpeg(rgb, q).astype(float) - rgb).mean() for q in (100, 40, 10, 3)]
    assert err[0] == 0 and err == sorted(err)
    noisy = [np.abs(distortions.noise(rgb, s).astype(float) - rgb).mean() for s in (0, 5, 20, 40)]
    assert noisy == sorted(noisy) and noisy[0] == 0
    assert np.array_equal(distortions.noise(rgb, 10, seed=1), distortions.noise(rgb, 10, seed=1))
    assert distortions.downscale(rgb, 3).shape[:2] == (40, round(160 / 3))  # (height, width)
    assert min(distortions.downscale(rgb, 8).shape[:2]) == 32  # never below 32 px


def test_plan_is_seeded_uses_only_the_given_rows_and_stays_in_range():
    rows = np.arange(100, 200)
    a = synthetic.plan(rows, 10, seed=7)
    assert a == synthetic.plan(rows, 10, seed=7) and a != synthetic.plan(rows, 10, seed=8)
    assert len(a) == 10 * len(distortions.CLASSIC) * 2
    assert {c.source for c in a} <= set(rows.tolist()) and len({c.source for c in a}) == 10
    for c in a:
        lo, hi = sorted(synthetic.ranges(c.kind)[c.rank - 1])
        assert lo <= c.strength <= hi
    assert len(synthetic.plan(np.arange(3), 10, seed=0)) == 3 * 6  # never more sources than rows


def test_catalogue_plan_draws_kinds_per_photo_and_never_a_held_out_kind():
    rows = np.arange(500)
    a = synthetic.plan(rows, 200, seed=3, kinds="catalogue", per_source=3)
    assert len(a) == 200 * 3 * 2
    per_source = {}
    for c in a:
        per_source.setdefault(c.source, set()).add(c.kind)
        lo, hi = sorted(synthetic.ranges(c.kind)[c.rank - 1])
        assert lo <= c.strength <= hi
    assert all(len(k) == 3 for k in per_source.values())
    used = {c.kind for c in a}
    assert used == set(distortions.TRAINING) and not used & set(distortions.HELD_OUT)
    with pytest.raises(ValueError, match="held out"):
        synthetic.ranges("motion_blur")


def test_every_catalogue_kind_changes_the_photo_more_as_it_grows_and_keeps_its_shape():
    """Each ladder moves the photo further from the original at every step (mean absolute
    difference), is seeded, and returns uint8 RGB of the same size (but downscaling)."""
    rgb = scene(5)
    for name, kind in distortions.CATALOGUE.items():
        outs = [distortions.apply(rgb, name, s, seed=1) for s in kind.ladder]
        assert np.array_equal(outs[0], rgb), name  # the first step leaves the photo untouched
        if name == "downscale":
            continue
        assert all(o.dtype == np.uint8 and o.shape == rgb.shape for o in outs), name
        diff = [np.abs(o.astype(float) - rgb).mean() for o in outs]
        assert all(b > a for a, b in zip(diff, diff[1:])), (name, diff)
        assert np.array_equal(distortions.apply(rgb, name, kind.ladder[2], seed=1), outs[2]), name


def test_copies_cache_is_keyed_by_what_the_streams_compute_not_by_head_settings(tmp_path):
    from afiqa.model.config import ModelConfig
    from train.synthetic import copies_dir, plan

    copies = plan(np.arange(40), 10, seed=1)
    base = ModelConfig(multilevel=True, level_taps="dense")
    at = copies_dir(tmp_path, base, 2, copies)
    assert at.parent == tmp_path and at.name.startswith("synthetic-")
    for head_only in (dict(head_units=(32,)), dict(head_members=3), dict(dropout=0.5), dict(spatial_attention=False)):
        assert copies_dir(tmp_path, base.replace(**head_only), 2, copies) == at
    for stream_change in (dict(level_taps="sparse"), dict(image_size=384), dict(backbones=("mobilenet_v2",))):
        assert copies_dir(tmp_path, base.replace(**stream_change), 2, copies) != at
    assert copies_dir(tmp_path, base, 1, copies) != at
    assert copies_dir(tmp_path, base, 2, plan(np.arange(40), 10, seed=2)) != at


def test_pairs_chain_source_over_moderate_over_strong():
    copies = synthetic.plan(np.arange(5), 2, seed=0)
    p = synthetic.pairs(copies)
    assert len(p) == len(copies)
    for better, worse in p:
        w = copies[worse]
        if w.rank == 1:
            assert better == -1 - w.source
        else:
            b = copies[better]
            assert (b.source, b.kind, b.rank) == (w.source, w.kind, 1)


def test_distorted_copy_is_the_planned_distortion_of_the_model_input():
    img = scene(5).astype(np.float32)
    c = synthetic.Copy(source=4, kind="blur", rank=2, strength=6.0)
    out = synthetic.distort(img, c)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert np.array_equal(out, distortions.blur(img.astype(np.uint8), 6.0).astype(np.float32))
    n = synthetic.Copy(source=4, kind="noise", rank=1, strength=10.0)
    assert np.array_equal(synthetic.distort(img, n), synthetic.distort(img, n))  # seeded per copy


def test_hinge_is_zero_once_the_order_holds_by_the_margin():
    from keras import ops

    loss = synthetic.hinge(0.05)
    d = np.array([[0.2], [0.05], [0.0], [-0.1]], np.float32)
    got = float(ops.convert_to_numpy(loss(None, d)))
    assert got == pytest.approx((0 + 0 + 0.05 + 0.15) / 4)


def test_pair_features_read_sources_from_the_cache_and_copies_from_their_arrays():
    from train.features import FeatureCache, PairFeatures

    n, m = 6, 4
    feats = [np.arange(n * 2 * 2 * 3, dtype=np.float16).reshape(n, 2, 2, 3)]
    cache = FeatureCache(None, {}, feats, [np.arange(n * 5, dtype=np.float32).reshape(n, 5)], [""] * n,
                         np.zeros(n, np.float32), np.array(["train"] * n), np.array(["g"] * n))
    syn_f = [-np.arange(m * 2 * 2 * 3, dtype=np.float16).reshape(m, 2, 2, 3) - 1]
    syn_l = [-np.arange(m * 5, dtype=np.float32).reshape(m, 5) - 1]
    pf = PairFeatures(np.array([[-1 - 2, 3], [1, -1 - 5]]), syn_f, syn_l, per_batch=2)
    idx = np.array([3, -1 - 2, 1, -1 - 5])
    f, lv = pf.inputs(cache, idx, [0], multilevel=True, flip=False)
    for k, i in enumerate(idx):
        want_f = feats[0][-1 - i] if i < 0 else syn_f[0][i]
        want_l = cache.levels[0][-1 - i] if i < 0 else syn_l[0][i]
        assert np.array_equal(f[k], want_f.astype(np.float32)) and np.array_equal(lv[k], want_l)
    flipped = pf.inputs(cache, idx, [0], multilevel=True, flip=True)[0]
    assert np.array_equal(flipped, f[:, :, ::-1])


def test_ranking_trainer_shares_the_head_and_keeps_pairs_out_of_batchnorm_statistics():
    import keras

    x_in = keras.Input((4,))
    bn = keras.layers.BatchNormalization()
    head = keras.Model(x_in, keras.layers.Dense(1)(keras.layers.Dropout(0.5)(bn(x_in))))
    trainer = synthetic.ranking_trainer(head)
    assert len(trainer.trainable_weights) == len(head.trainable_weights)  # shared, not copied
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, (16, 4)).astype("float32")
    far = rng.normal(50.0, 1.0, (16, 4)).astype("float32")  # pairs from another distribution
    trainer.compile("adam", loss=["mae", synthetic.hinge(0.1)])
    kernel = head.layers[-1].kernel.numpy().copy()
    trainer.fit([x, far, far * 2], [np.zeros(16), np.zeros(16)], batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(kernel, head.layers[-1].kernel.numpy())
    # one update from the dataset batch alone: 0.01 of its mean (the pairs would pull ~50)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * x.mean(axis=0), rtol=1e-3)
