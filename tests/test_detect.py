"""detect: the classifier, the attacks, likelihood scores, purification and the caveat sets."""
import numpy as np
import pytest

from tinyar import data, detect, metrics
from tinyar.models import FVSBN, NADE, CategoricalNADE
from tinyar.plot import roc_panels


@pytest.fixture(scope="module")
def digits():
    d = data.digits("binary")
    clf = detect.train_classifier(d.train[:600], d.labels["train"][:600], epochs=15, rng=0)
    return d, clf


def test_classifier_learns_digits(digits):
    d, clf = digits
    assert clf.accuracy(d.test, d.labels["test"]) > 0.8
    logits = clf.logits(d.test[:5]).data
    np.testing.assert_array_equal(clf.predict(d.test[:5]), np.argmax(logits, axis=1))   # the likeliest class


def test_input_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    clf = detect.Classifier(6, n_classes=3, n_hidden=5, input_scale=0.5, rng=0, dtype=np.float64)
    x, y = rng.standard_normal((2, 6)), np.array([0, 2])
    g = clf.input_gradient(x, y)
    h = 1e-6
    for b in range(2):
        for j in range(6):
            xp, xm = x.copy(), x.copy()
            xp[b, j] += h
            xm[b, j] -= h
            numeric = (clf.loss(xp[b:b + 1], y[b:b + 1]).item() - clf.loss(xm[b:b + 1], y[b:b + 1]).item()) / (2 * h)
            assert abs(g[b, j] - numeric) < 1e-6


def test_flip_attack_flips_k_pixels_by_signed_gradient_and_beats_random_flips(digits):
    d, clf = digits
    x, y = d.test[:100], d.labels["test"][:100]
    x1 = detect.flip_attack(clf, x, y, 1)
    g = clf.input_gradient(x, y)
    expected = np.argmax((1 - 2 * x) * g, axis=1)                    # sign-aware first-order gain
    assert np.array_equal(np.argmax(x1 != x, axis=1), expected)
    x3 = detect.flip_attack(clf, x, y, 3)
    assert np.all((x3 != x).sum(axis=1) == 3) and set(np.unique(x3)) <= {0.0, 1.0}
    xr = detect.random_flips(x, 3, rng=0)
    assert np.all((xr != x).sum(axis=1) == 3)
    assert clf.accuracy(x3, y) < clf.accuracy(xr, y) - 0.3
    assert clf.loss(x3, y).item() > clf.loss(xr, y).item()


def test_flip_budgets_beyond_the_image_are_refused():
    clf = detect.Classifier(6, n_classes=3, n_hidden=5, rng=0)
    x, y = np.zeros((2, 6)), np.array([0, 2])
    assert np.all(detect.flip_attack(clf, x, y, 6) == 1)              # k = D: every pixel flipped once
    for bad in (7, -1, 2.5):
        with pytest.raises(ValueError, match=r"k must be .* in 0\.\.6"):
            detect.flip_attack(clf, x, y, bad)
        with pytest.raises(ValueError, match=r"k must be .* in 0\.\.6"):
            detect.random_flips(x, bad, rng=0)


def test_fgsm_moves_each_pixel_eps_along_the_gradient_sign():
    d = data.digits("levels")
    x, y = d.train[:400], d.labels["train"][:400]
    clf = detect.train_classifier(x, y, input_scale=1 / 16, epochs=10, rng=1)
    xa = detect.fgsm(clf, x, y, 2, 0, 16, integer=True)
    assert xa.dtype.kind == "i" and xa.min() >= 0 and xa.max() <= 16
    assert np.abs(xa - x).max() == 2
    g = clf.input_gradient(x, y)
    inside = (x >= 2) & (x <= 14) & (g != 0)
    assert np.all(xa[inside] - x[inside] == 2 * np.sign(g[inside]))
    assert clf.accuracy(xa, y) < clf.accuracy(x, y) - 0.2
    xn = detect.random_sign_noise(x, 2, 0, 16, integer=True, rng=0)
    assert np.abs(xn - x).max() == 2 and clf.accuracy(xn, y) > clf.accuracy(xa, y)


def test_bits_per_dim_and_detection_table():
    uniform = FVSBN(8)                                                # p(x) = 2^-8: one bit per dimension
    x = (np.random.default_rng(0).random((5, 8)) < 0.5).astype(np.float32)
    np.testing.assert_allclose(detect.bits_per_dim(uniform, x), 1.0, rtol=1e-6)
    sparse = FVSBN(8)
    sparse.b.data[...] = -3.0                                         # likes zeros
    clean = np.zeros((20, 8), np.float32)
    clean[:, 0] = 1
    noise = (np.random.default_rng(1).random((20, 8)) < 0.5).astype(np.float32)
    table = detect.detection_table({"sparse": sparse, "uniform": uniform}, clean, {"noise": noise})
    assert table["noise"]["uniform"] == 0.5                           # every score tied
    # sparse: the score grows with the number of ones; every clean row has exactly one, so a
    # noise row is flagged above it with more than one, ties with one, falls below with none
    ones = noise.sum(axis=1)
    assert table["noise"]["sparse"] == np.mean(ones > 1) + 0.5 * np.mean(ones == 1)
    assert table["noise"]["sparse"] > 0.9
    expected = f"| set | sparse | uniform |\n|---|---|---|\n| noise | {table['noise']['sparse']:.3f} | 0.500 |"
    assert detect.markdown_table(table) == expected


def _tiny_nade(D=5, seed=0):
    rng = np.random.default_rng(seed)
    m = NADE(D, n_hidden=4, rng=rng, dtype=np.float64)
    m.W.data *= 4
    m.b.data[...] = rng.standard_normal(m.b.shape)
    return m


def test_purify_takes_the_best_single_flip_and_never_lowers_the_likelihood():
    m = _tiny_nade()
    configs, log_p = metrics.exact_log_probs(m)
    x = configs[::3].astype(np.float64)                              # 11 inputs
    x1, changed = detect.purify_greedy(m, x, budget=1)
    for r in range(len(x)):
        flips = np.abs(configs - x[r]).sum(axis=1) == 1
        best = configs[flips][np.argmax(log_p[flips])]
        own = log_p[np.all(configs == x[r], axis=1)][0]
        expected = best if log_p[flips].max() > own else x[r]
        assert np.array_equal(x1[r], expected)
    assert changed.max() <= 1
    x_many, changed = detect.purify_greedy(m, x, budget=5)
    lp0, lp = metrics.model_log_likelihoods(m, x), metrics.model_log_likelihoods(m, x_many)
    assert np.all(lp >= lp0 - 1e-12) and changed.max() <= 5
    for r in range(len(x)):                                          # a local maximum (or the budget ran out)
        if changed[r] < 5:
            flips = np.abs(configs - x_many[r]).sum(axis=1) == 1
            assert log_p[flips].max() <= lp[r] + 1e-9


def test_purify_categorical_stays_within_eps_of_the_input():
    rng = np.random.default_rng(0)
    m = CategoricalNADE(6, n_levels=5, n_hidden=4, rng=rng, dtype=np.float64)
    m.b.data[...] = 2 * rng.standard_normal(m.b.shape)
    x = rng.integers(0, 5, (10, 6))
    xp, changed = detect.purify_greedy(m, x, budget=4, eps=1)
    assert xp.dtype.kind == "i" and np.abs(xp - x).max() <= 1 and changed.max() <= 4
    assert np.all(metrics.model_log_likelihoods(m, xp) >= metrics.model_log_likelihoods(m, x))
    assert changed.sum() > 0
    with pytest.raises(ValueError, match="eps"):
        detect.purify_greedy(m, x, budget=1)


def test_purification_restores_accuracy_with_a_model_of_the_digits(digits):
    d, clf = digits
    fv = FVSBN(64)
    from tinyar.optim import SGD
    from tinyar.train import fit
    fit(fv, d.train, None, SGD(fv.parameters(), lr=0.03, momentum=0.9), 60, 100, progress=False, log=lambda s: None)
    x, y = d.test[:150], d.labels["test"][:150]
    xa = detect.flip_attack(clf, x, y, 3)
    xp, changed = detect.purify_greedy(fv, xa, budget=3)
    assert changed.max() <= 3
    assert clf.accuracy(xp, y) > clf.accuracy(xa, y) + 0.15
    # stop_at: rows at least as likely as their threshold are left alone
    high = metrics.model_log_likelihoods(fv, xa) - 1e-6
    assert np.array_equal(detect.purify_greedy(fv, xa, budget=3, stop_at=high)[0], xa)


def test_caveat_sets_and_a_model_that_prefers_the_blank_page():
    clean = data.digits("binary").test[:50]
    sets = detect.ood_sets(clean, "binary", rng=0, train=clean)
    assert set(sets) == {"blank", "inverted", "mirrored", "upside-down", "bars", "noise", "average"}
    assert np.all(sets["blank"] == 0) and np.array_equal(sets["inverted"], 1 - clean)
    assert np.array_equal(sets["mirrored"].reshape(-1, 8, 8)[:, :, 0], clean.reshape(-1, 8, 8)[:, :, 7])
    assert np.array_equal(sets["average"][0], (clean.mean(axis=0) > 0.5).astype(np.float32))
    assert np.all(sets["bars"].sum(axis=1) == 8)
    levels = detect.ood_sets(data.digits("levels").test[:10], "categorical", rng=0)
    assert levels["inverted"].max() <= 16 and levels["noise"].dtype.kind == "i"
    assert set(np.unique(levels["two-tone"])) <= {0, 16}
    sparse = FVSBN(64)
    sparse.b.data[...] = -1.0                                         # every pixel on with p = 0.27: the blank
    table = detect.caveat_table({"indep": sparse}, clean, sets)       # page is the likeliest image of all
    mean_bits, likelier, auc = table["blank"]["indep"]
    assert likelier == 1.0 and auc == 0.0 and mean_bits < table["clean"]["indep"][0]
    assert table["noise"]["indep"][2] > 0.95


def test_roc_panels_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    path = roc_panels({"model": (rng.standard_normal(50), {"shifted": rng.standard_normal(40) + 1})},
                      tmp_path / "roc.png", title="ROC")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="nothing to draw"):
        roc_panels({}, tmp_path / "none.png")
    assert metrics.auroc([0.0], [1.0]) == 1.0                         # the one positive above the one negative
    assert metrics.auroc([1.0], [0.0]) == 0.0
