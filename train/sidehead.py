"""Train and measure a model's side heads (``afiqa.model.sideheads``) on its cached fused features.

    python -m train.sidehead --fused runs/fused/afiqa-v4 --out weights/afiqa-v4.heads.npz [--report R.json]

``--fused``: the folder ``train.fused`` wrote. Nothing here changes the score.

* Projection: the fused features standardised and projected on their ``--components``
  principal components (a randomized SVD of the training rows). Both heads are linear in
  the projection and are saved composed with it: linear in the fused features.
* ``problem``: a softmax over the six families and none (``train.problems``), an L2
  logistic regression on the projection and the photo's statistics (``photo_stats``:
  brightness, clipping, contrast, saturation, cast, sharpness, noise), on ``problem_train`` (untouched training photos: none; distorted copies:
  their family). Its L2 strength is chosen by leaving one training kind out at a time
  (``fit_problem``): the held-out kinds of the check below choose nothing. Measured once on ``problem_eval``: validation photos with the kinds no
  family trained on (``train.problems.HELD_OUT``), at the two strongest ladder strengths,
  and on the untouched validation photos (how often ``none``).
* ``uncertainty``: the likely |error| of the score. A ridge regression on the projection
  refitted leaving one BIQ2021 subset out gives every training photo an out-of-fold
  error (``error`` = MOS minus the prediction after one linear fit). A second ridge learns
  log |error| from the projection, the members' spread and the score's distance from the middle of the
  scale, and its scale is set so the mean matches. Checked leaving one subset out (fit on two
  subsets' out-of-fold errors, read on the third) and on the validation photos against the model's
  own errors there (which no part of the model trained on).
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from afiqa.model.sideheads import FAMILIES, NONE, SideHeads, extra_inputs

CLASSES = FAMILIES + (NONE,)


def fit_projection(x: np.ndarray, components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, basis (D, P)): standardisation, then a randomized SVD (2 power iterations)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-3
    xs = (x - mean) / scale
    rng = np.random.default_rng(seed)
    q = xs.T @ (xs @ rng.standard_normal((xs.shape[1], components + 20)).astype(np.float32))  # (D, P+20)
    for _ in range(2):
        q, _ = np.linalg.qr(q)
        q = xs.T @ (xs @ q)
    q, _ = np.linalg.qr(q)
    _, _, vt = np.linalg.svd(xs @ q, full_matrices=False)
    basis = (q @ vt.T)[:, :components]
    return mean.astype(np.float32), scale.astype(np.float32), basis.astype(np.float32)


def fit_softmax(z: np.ndarray, y: np.ndarray, l2: float, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, L2 on the weights, by L-BFGS."""
    n, p = z.shape
    k = len(CLASSES)
    onehot = np.eye(k)[y]
    w8 = np.ones(n) if weight is None else weight
    w8 = w8 / w8.sum()

    def loss(theta):
        w, b = theta[:p * k].reshape(p, k), theta[p * k:]
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        prob = np.exp(logp)
        f = -(w8 * (onehot * logp).sum(axis=1)).sum() + 0.5 * l2 * (w ** 2).sum()
        g = (prob - onehot) * w8[:, None]
        return f, np.concatenate([(z.T @ g + l2 * w).ravel(), g.sum(axis=0)])

    res = optimize.minimize(loss, np.zeros(p * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:p * k].reshape(p, k).astype(np.float32), res.x[p * k:].astype(np.float32)


def predict_softmax(z, w, b) -> np.ndarray:
    logits = z @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ridge(a: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    am, ym = a.mean(axis=0), y.mean()
    ac = a - am
    w = np.linalg.solve(ac.T @ ac + l2 * len(a) * np.eye(a.shape[1]), ac.T @ (y - ym))
    return w, float(ym - am @ w)


def linear_fit_error(pred: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """MOS minus ``pred`` after one least-squares linear fit of ``pred`` to MOS."""
    a = np.stack([pred, np.ones_like(pred)], axis=1)
    coef, *_ = np.linalg.lstsq(a, mos, rcond=None)
    return mos - a @ coef


def tracking(u: np.ndarray, err: np.ndarray) -> dict:
    """How well uncertainty ``u`` tracks |error|: Spearman, and the mean |error| of the 10%
    most uncertain photos over the rest's."""
    e = np.abs(err)
    top = u >= np.quantile(u, 0.9)
    rho = float(stats.spearmanr(u, e)[0]) if np.ptp(u) > 0 and np.ptp(e) > 0 else 0.0  # a constant tracks nothing
    return {"n": int(len(u)), "spearman": round(rho, 4),
            "top10_ratio": round(float(e[top].mean() / e[~top].mean()), 3),
            "mean_abs_error": round(float(e.mean()), 3), "mean_uncertainty": round(float(u.mean()), 3)}


def fit_problem(z: np.ndarray, y: np.ndarray, source: list[str], kinds: list[str] | None = None,
                l2s=(1e-2, 1e-1, 1.0)) -> tuple:
    """(w, b, report): the softmax, its L2 chosen by cross-validation.

    With ``kinds`` (each row's distortion kind, "" untouched), the folds leave one kind out
    (each kind of a family that has several, ``train.problems.TRAINING``) with a share of the
    untouched photos: the L2 that best names the family of a kind it did not see, and
    ``none`` for untouched photos it did not see (the mean of the two), which is what the
    head must do on distortions nobody listed. Else 5 folds over source photos."""
    y = np.asarray(y)
    source = np.asarray([str(p) for p in source])
    if kinds is not None:
        kinds = np.asarray(kinds)
        fam_of = {k: y[kinds == k][0] for k in set(kinds) if k}
        held = sorted(k for k in fam_of if sum(f == fam_of[k] for f in fam_of.values()) > 1)
    else:
        held = []
    n = len(held) or 5
    src_fold = np.array([zlib.crc32(p.encode()) % n for p in source])
    untouched = y == CLASSES.index(NONE)
    cv = {}
    for l2 in l2s:
        right_kind, right_none, acc = [], [], []
        for f in range(n):
            if held:
                test_kind, test_none = kinds == held[f], untouched & (src_fold == f)
                test = test_kind | test_none
            else:
                test = src_fold == f
            if not test.any() or test.all():
                continue
            w, b = fit_softmax(z[~test], y[~test], l2)
            got = predict_softmax(z, w, b).argmax(1)
            if held:
                right_kind.append(np.mean(got[test_kind] == y[test_kind]))
                right_none.append(np.mean(got[test_none] == y[test_none]))
            else:
                acc.append(np.mean(got[test] == y[test]))
        if held:
            cv[l2] = {"unseen_kind_family": round(float(np.mean(right_kind)), 4), "none": round(float(np.mean(right_none)), 4)}
            cv[l2]["criterion"] = round((cv[l2]["unseen_kind_family"] + cv[l2]["none"]) / 2, 4)
        else:
            cv[l2] = {"criterion": round(float(np.mean(acc)), 4)}
        print(f"problem head: L2 {l2:g}: {cv[l2]}", flush=True)
    l2 = max(cv, key=lambda k: cv[k]["criterion"])
    w, b = fit_softmax(z, y, l2)
    how = f"leave one kind out ({', '.join(held)})" if held else "5 folds over source photos"
    return w, b, {"l2": l2, "cross_validation": how, "cv": {str(k): v for k, v in cv.items()}}


def fit_uncertainty(z: np.ndarray, members: np.ndarray, score: np.ndarray, mos: np.ndarray, group: np.ndarray,
                    l2: float = 1e-1) -> tuple:
    """(w, b, report) of the uncertainty head (all on the 0-100 scale): out-of-fold errors of a
    ridge refitted leaving one group out, then log |error| learnt from the inputs, checked
    leaving one group out as well."""
    oof = np.zeros_like(mos)
    for g in np.unique(group):
        w, b = ridge(z[group != g], mos[group != g], 1e-2)
        oof[group == g] = z[group == g] @ w + b
    err = np.zeros_like(mos)
    for g in np.unique(group):
        err[group == g] = linear_fit_error(oof[group == g], mos[group == g])
    inputs = np.concatenate([z, extra_inputs(members, score)], axis=1)
    target = np.log(np.abs(err) + 1.0)
    folds = {}
    for g in np.unique(group):
        w, b = ridge(inputs[group != g], target[group != g], l2)
        folds[str(g)] = tracking(np.exp(inputs[group == g] @ w + b), err[group == g])
    w, b = ridge(inputs, target, l2)
    b += float(np.log(np.abs(err).mean() / np.exp(inputs @ w + b).mean()))  # the mean uncertainty is the mean |error|
    report = {"ridge_srocc_by_held_out_group": {str(g): round(float(stats.spearmanr(oof[group == g], mos[group == g])[0]), 4)
                                                for g in np.unique(group)},
              "by_held_out_group": folds,
              "mean_over_groups": {k: round(float(np.mean([f[k] for f in folds.values()])), 4)
                                   for k in ("spearman", "top10_ratio")}}
    return w.astype(np.float32), b, report


def problem_eval(heads: SideHeads, distorted, untouched) -> dict:
    """How often the head names the right family on ``distorted`` copies (a ``train.fused``
    set), per kind, and ``none`` on ``untouched`` photos."""
    from train import problems

    eval_rows = distorted.rows
    got = heads.problems(distorted.fused, distorted.stats).argmax(1)
    want = np.array([CLASSES.index(problems.family_of(r["kind"])) for r in eval_rows])
    per_kind = {}
    for kind in sorted({r["kind"] for r in eval_rows}):
        m = np.array([r["kind"] == kind for r in eval_rows])
        per_kind[kind] = round(float(np.mean(got[m] == want[m])), 3)
    none = float(np.mean(heads.problems(untouched.fused, untouched.stats).argmax(1) == CLASSES.index(NONE)))
    return {"right_family": round(float(np.mean(got == want)), 4), "by_kind": per_kind, "n": int(len(got)),
            "none_on_untouched": round(none, 4), "n_untouched": int(len(untouched.rows))}


def main(argv: list[str] | None = None) -> dict:
    from train import fused, problems

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fused", required=True)
    ap.add_argument("--out", required=True, help="the side heads' .npz (a new file)")
    ap.add_argument("--report", help="write the figures as JSON here")
    ap.add_argument("--components", type=int, default=256)
    args = ap.parse_args(argv)
    root = Path(args.fused)
    if Path(args.out).exists():
        raise SystemExit(f"{args.out} exists; afiqa never writes over a file")

    pt, train, val, pe = (fused.load(root / n) for n in ("problem_train", "train", "val", "problem_eval"))
    report: dict = {"components": args.components}
    mean, scale, basis = fit_projection(np.concatenate([train.fused, pt.fused]), args.components)
    z_pt, z_tr = (((s.fused - mean) / scale) @ basis for s in (pt, train))
    s_mean, s_scale = pt.stats.mean(axis=0), pt.stats.std(axis=0) + 1e-6

    y = np.array([CLASSES.index(problems.family_of(r["kind"])) for r in pt.rows])
    pw, pb, report["problem"] = fit_problem(np.concatenate([z_pt, (pt.stats - s_mean) / s_scale], axis=1), y,
                                            [r["path"] for r in pt.rows], [r["kind"] for r in pt.rows])

    clean = np.array([not r["kind"] for r in pt.rows])
    rows = train.rows + [r for r in pt.rows if not r["kind"]]
    uw, ub, report["uncertainty"] = fit_uncertainty(
        np.concatenate([z_tr, z_pt[clean]]), 100 * np.concatenate([train.members, pt.members[clean]]),
        100 * np.concatenate([train.score, pt.score[clean]]), 100 * np.array([r["mos"] for r in rows]),
        np.array([r["group"] for r in rows]))
    heads = SideHeads.compose(mean, scale, basis, (pw, pb), (uw, ub), (s_mean, s_scale))

    # read once: kinds no family trained on, and photos no part of the model trained on
    report["problem"]["held_out_kinds_at_levels_3_4"] = problem_eval(heads, pe, val)
    err_val = linear_fit_error(100 * val.score, 100 * np.array([r["mos"] for r in val.rows]))
    report["uncertainty"]["validation_against_the_model_errors"] = tracking(
        heads.uncertainty(val.fused, 100 * val.members, 100 * val.score), err_val)
    print(json.dumps(report, indent=1), flush=True)
    heads.save(args.out)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
