"""scikit-learn's own metric tests, run against ``course_utils.metrics``.

Adapted from scikit-learn ``sklearn/metrics/tests/test_classification.py`` (``make_prediction`` on iris with a
linear SVC, its decision function as scores; ``test_precision_recall_f1_score_multiclass``, ``test_confusion_matrix_multiclass_subset_labels``,
``test_confusion_matrix_on_zero_length_input``, ``test_confusion_matrix_dtype``, ``test_multiclass_jaccard_score``)
and ``sklearn/metrics/tests/test_ranking.py`` (``test_average_precision_constant_values``, ``_average_precision_slow``
against ``average_precision_score`` on the same iris scores, and its rejection of NaN input). Labels are the
class indices ``0..K-1`` the course works with (scikit-learn's string labels mapped to integers).
"""

import numpy as np
import pytest
import torch
from sklearn import datasets, svm
from sklearn import metrics as skm

from course_utils import metrics


def make_prediction():
    """test_classification.py's make_prediction(binary=False): iris, half for training a linear SVC."""
    iris = datasets.load_iris()
    X, y = iris.data, iris.target
    n_samples, n_features = X.shape
    p = np.arange(n_samples)
    rng = np.random.RandomState(0)
    rng.shuffle(p)
    X, y = X[p], y[p]
    half = n_samples // 2
    X = np.c_[X, rng.randn(n_samples, 200 * n_features)]  # noisy features, as upstream, to make it harder
    clf = svm.SVC(kernel="linear", random_state=0)  # upstream's probability=True is deprecated: use the
    scores = clf.fit(X[:half], y[:half]).decision_function(X[half:])  # decision function as scores
    return y[half:], scores.argmax(1), scores


@pytest.fixture(scope="module")
def prediction():
    return make_prediction()


def test_f1_multiclass(prediction):
    y_true, y_pred, _ = prediction
    f1 = metrics.f1_scores(torch.tensor(y_pred), torch.tensor(y_true))
    assert f1["micro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="micro"), abs=1e-12)
    assert f1["macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"), abs=1e-12)


def test_confusion_matrix_multiclass(prediction):
    y_true, y_pred, _ = prediction
    cm = metrics.confusion_matrix(torch.tensor(y_pred), torch.tensor(y_true), 3)
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(y_true, y_pred, labels=[0, 1, 2]))
    assert cm.dtype == torch.int64  # test_confusion_matrix_dtype: int64 counts
    # a label in neither y_true nor y_pred gives a zero row and column (test_..._subset_labels' "extra_label")
    cm4 = metrics.confusion_matrix(torch.tensor(y_pred), torch.tensor(y_true), 4)
    np.testing.assert_array_equal(cm4.numpy(), skm.confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]))


@pytest.mark.parametrize("labels", [None, [0, 1], [0, 1, 2]], ids=["None", "binary", "multiclass"])
def test_confusion_matrix_on_zero_length_input(labels):
    """Upstream expects a (0, 0) or (K, K) zero matrix (the installed scikit-learn now refuses empty input)."""
    n = len(labels) if labels else 0
    cm = metrics.confusion_matrix(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long),
                                  n if labels else None)
    np.testing.assert_array_equal(cm.numpy(), np.zeros((n, n), dtype=int))


def test_multiclass_jaccard_score():
    names = ["ant", "bird", "cat"]
    y_true = [names.index(s) for s in ["ant", "ant", "cat", "cat", "ant", "cat", "bird", "bird"]]
    y_pred = [names.index(s) for s in ["cat", "ant", "cat", "cat", "ant", "bird", "bird", "cat"]]
    iou = metrics.iou_per_class(torch.tensor(y_pred), torch.tensor(y_true), 3)
    np.testing.assert_allclose(iou.numpy(), skm.jaccard_score(y_true, y_pred, average=None))
    assert metrics.mean_iou(torch.tensor(y_pred), torch.tensor(y_true), 3) == pytest.approx(
        skm.jaccard_score(y_true, y_pred, average="macro"))
    # labels outside 0..K-1: scikit-learn raises for labels=[4] / [-1] ("Got -1 < 0"), so do we
    for bad in ([4] + y_pred[1:], [-1] + y_pred[1:]):
        with pytest.raises(ValueError, match=r"labels must be in 0..2"):
            metrics.iou_per_class(torch.tensor(bad), torch.tensor(y_true), 3)


def _average_precision_slow(y_true, y_score):
    """test_ranking.py's _average_precision_slow: sum over thresholds of (R_n - R_{n-1}) P_n."""
    precision, recall, _ = skm.precision_recall_curve(y_true, y_score)
    precision, recall = list(reversed(precision)), list(reversed(recall))
    return sum((recall[i] - recall[i - 1]) * precision[i] for i in range(1, len(recall)))


def test_average_precision_against_the_slow_definition(prediction):
    y_true, _, scores = prediction
    # iris scores as "pixels": one image of 75 pixels, 3 classes
    ap = metrics.average_precision_per_class(torch.tensor(scores.T[None, :, :, None]), torch.tensor(y_true)[None, :, None])
    for c in range(3):
        assert ap[c].item() == pytest.approx(_average_precision_slow(y_true == c, scores[:, c]), abs=1e-12)
        assert ap[c].item() == pytest.approx(skm.average_precision_score(y_true == c, scores[:, c]), abs=1e-12)


def test_average_precision_constant_values():
    """A constant score has one threshold: AP is the fraction of positives, 0.25."""
    y_true = torch.zeros(100, dtype=torch.long)
    y_true[::4] = 1
    scores = torch.stack([torch.zeros(100), torch.ones(100)])[None, :, :, None]  # (1, 2, 100, 1)
    assert metrics.average_precision_per_class(scores, y_true[None, :, None])[1].item() == 0.25


def test_nan_scores_raise_as_in_scikit_learn():
    scores = torch.rand(1, 2, 4, 1)
    scores[0, 1, 2, 0] = float("nan")
    target = torch.tensor([[[0], [1], [1], [0]]])
    with pytest.raises(ValueError, match="NaN"):
        skm.average_precision_score(target.flatten().numpy() == 1, scores[0, 1, :, 0].numpy())
    with pytest.raises(ValueError, match="scores contain NaN"):
        metrics.average_precision_per_class(scores, target)
    with pytest.raises(ValueError, match="scores contain NaN"):
        metrics.mean_iou(scores, target, 2)
    # accuracy of a diverged model (NaN logits) is still reported: argmax counts a NaN as the largest score,
    # so the model predicts that class (the course shows diverged runs at chance instead of crashing)
    assert metrics.accuracy(torch.tensor([[0.1, float("nan")], [0.3, 0.2]]), torch.tensor([0, 1])) == 0.0


@pytest.mark.parametrize("y_pred,y_true,num_classes,match", [
    ([-1, 0, 1], [0, 0, 1], None, r"y_pred must be class labels >= 0, got -1..1"),
    ([0, 1, 2], [0, -2, 1], None, r"y_true must be class labels >= 0, got -2..1"),
    ([0, 1, 3], [0, 1, 1], 3, r"y_pred must be class labels 0..2, got 0..3"),
    ([0, 1, 1], [0, 1, 5], 3, r"y_true must be class labels 0..2, got 0..5"),
    ([0.2, 0.9, 0.7], [0, 1, 1], None, r"non-integer values such as 0.2"),
    ([0, 1, 1], [[1, 0], [0, 1], [0, 1]], None, r"one-hot, pass y_true.argmax\(1\)"),
    ([0, 1], [0, 1, 1], None, r"shapes differ"),
], ids=["neg-pred", "neg-true", "pred>=K", "true>=K", "probabilities-as-labels", "one-hot", "lengths"])
def test_labels_out_of_range_and_wrong_kinds_raise(y_pred, y_true, num_classes, match):
    """scikit-learn's f1_score / confusion_matrix refuse these (or count them under their own labels); ours
    used to count -1 as class 0 and report an F1."""
    with pytest.raises(ValueError, match=match):
        metrics.confusion_matrix(torch.tensor(y_pred), torch.tensor(y_true), num_classes)
    with pytest.raises(ValueError, match=match):
        metrics.f1_scores(torch.tensor(y_pred), torch.tensor(y_true), num_classes)
