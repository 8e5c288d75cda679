import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.metrics import average_precision_score, jaccard_score

from course_utils.metrics import (accuracy, average_precision_per_class, confusion_matrix, f1_scores, iou_per_class,
                                  macro_f1, mean_average_precision, mean_iou, micro_f1, segmentation_report,
                                  worst_group_ap)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, 6, (200,), generator=g)
    y_pred = torch.where(torch.rand(200, generator=g) < 0.6, y_true, torch.randint(0, 6, (200,), generator=g))
    y_pred[y_pred == 5] = 4  # a class that is never predicted
    assert accuracy(y_pred, y_true) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    f1 = f1_scores(y_pred, y_true)
    assert f1["micro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="micro"))
    assert f1["macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert micro_f1(y_pred, y_true) == f1["micro"] and macro_f1(y_pred, y_true) == f1["macro"]
    assert torch.equal(confusion_matrix(y_pred, y_true, 6), torch.as_tensor(skm.confusion_matrix(y_true, y_pred, labels=range(6))))


def test_scores_and_shape_errors():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 1]))


def test_binary_logits_are_thresholded_at_zero():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-0.2]])
    assert accuracy(logits, torch.tensor([1, 0, 0, 0])) == pytest.approx(0.75)


def test_recall_at_k_against_scikit_learn_neighbours():
    from sklearn.neighbors import NearestNeighbors

    from course_utils.metrics import recall_at_k

    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    for k in (1, 3):
        idx = NearestNeighbors(n_neighbors=k + 1).fit(emb.numpy()).kneighbors(emb.numpy(), return_distance=False)[:, 1:]
        expected = (labels[torch.from_numpy(idx)] == labels[:, None]).any(1).float().mean().item()
        assert recall_at_k(emb, labels, k) == pytest.approx(expected)
    separated = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0)]) + 0.01 * torch.randn(10, 2, generator=g)
    assert recall_at_k(separated, torch.tensor([0] * 5 + [1] * 5)) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(emb, labels, 60)


def test_active_triplet_fraction_matches_a_loop_and_the_triplet_loss():
    from course_utils.losses import sample_triplets, triplet_loss
    from course_utils.metrics import active_triplet_fraction
    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(30, 4, generator=g), torch.arange(30) % 3
    triplets = sample_triplets(labels, 200, seed=1)
    for margin in (0.1, 1.0):
        loop = sum(float(torch.dist(emb[a], emb[p]) - torch.dist(emb[a], emb[n]) + margin > 0)
                   for a, p, n in triplets.tolist()) / len(triplets)
        assert active_triplet_fraction(emb, triplets, margin) == pytest.approx(loop)
    separated = torch.tensor([[0.0], [0.1], [5.0], [5.1]])  # two tight, far-apart classes: every triplet easy
    easy = sample_triplets(torch.tensor([0, 0, 1, 1]), 50, seed=0)
    assert active_triplet_fraction(separated, easy, 1.0) == 0.0
    assert triplet_loss(*(separated[easy[:, i]] for i in range(3)), margin=1.0) == 0
    assert active_triplet_fraction(torch.zeros(4, 2), easy, 0.2) == 1.0  # collapsed: every triplet active


def test_triplet_distances_and_distance_summary_against_scipy():
    from scipy.spatial.distance import cdist, pdist

    from course_utils.losses import sample_triplets
    from course_utils.metrics import distance_summary, triplet_distances
    g = torch.Generator().manual_seed(3)
    emb, labels = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.arange(40) % 2
    triplets = sample_triplets(labels, 300, seed=2)
    d_ap, d_an = triplet_distances(emb, triplets)
    full = cdist(emb.numpy(), emb.numpy())
    a, p, n = triplets.numpy().T
    np.testing.assert_allclose(d_ap.numpy(), full[a, p])
    np.testing.assert_allclose(d_an.numpy(), full[a, n])
    s = distance_summary(emb, triplets, margin=0.5)
    assert s["spread"] == pytest.approx(pdist(emb.numpy()).mean())
    assert s["d_ap"] == pytest.approx(full[a, p].mean()) and s["d_an"] == pytest.approx(full[a, n].mean())
    assert s["active"] == pytest.approx(np.mean(full[a, p] - full[a, n] + 0.5 > 0))
    collapsed = distance_summary(torch.ones(40, 5), triplets, margin=0.2)  # every image at one point
    assert collapsed == {"spread": 0.0, "d_ap": 0.0, "d_an": 0.0, "active": 1.0}
    with pytest.raises(ValueError, match="triplets"):
        triplet_distances(emb, triplets[:, :2])


# Segmentation metrics (IoU, mIoU, per-class AP, mAP, worst-group AP) against scikit-learn.

def _masks(seed, K=6, shape=(3, 12, 12), p_right=0.6):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, K, shape, generator=g)
    noise = torch.randint(0, K, shape, generator=g)
    pred = torch.where(torch.rand(shape, generator=g) < p_right, target, noise)
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_against_scikit_learn(seed):
    pred, target = _masks(seed)
    target[target == 5] = 4  # class 5: predicted, never true -> IoU 0, counted
    pred[pred == 3] = 2  # class 3: true, never predicted -> IoU 0, counted
    pred[pred == 1], target[target == 1] = 0, 0  # class 1: absent from both -> nan, left out
    y_true, y_pred = target.flatten().numpy(), pred.flatten().numpy()
    iou = iou_per_class(pred, target, 7)  # class 6 is absent as well
    assert iou[1].isnan() and iou[6].isnan() and iou[5] == 0 and iou[3] == 0
    present = [0, 2, 3, 4, 5]
    expected = jaccard_score(y_true, y_pred, labels=present, average=None)
    np.testing.assert_allclose(iou[present].numpy(), expected)
    assert mean_iou(pred, target, 7) == pytest.approx(jaccard_score(y_true, y_pred, average="macro"))


def test_mean_iou_from_scores_and_on_fixed_masks():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 0], [0, 0, 0, 0]]])
    # class 0: TP 7, FP 1, FN 1 -> 7/9; class 1: TP 4, FP 1 -> 4/5; class 2: TP 3, FN 1 -> 3/4
    torch.testing.assert_close(iou_per_class(pred, target, 3), torch.tensor([7 / 9, 4 / 5, 3 / 4], dtype=torch.float64))
    scores = torch.nn.functional.one_hot(pred, 3).movedim(-1, 1).float()  # (1, 3, 4, 4): arg-maxed over classes
    assert mean_iou(scores, target, 3) == pytest.approx((7 / 9 + 4 / 5 + 3 / 4) / 3)
    assert mean_iou(target, target, 3) == 1.0
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        mean_iou(pred + 1, target, 3)
    with pytest.raises(ValueError, match="shaped like target"):
        mean_iou(pred[:, :3], target, 3)


@pytest.mark.parametrize("quantise", [False, True])
def test_average_precision_against_scikit_learn(quantise):
    g = torch.Generator().manual_seed(3)
    K = 5
    target = torch.randint(0, K - 1, (4, 10, 10), generator=g)  # class 4 never occurs: AP nan
    logits = torch.randn(4, K, 10, 10, generator=g) + 2.0 * torch.nn.functional.one_hot(target, K).movedim(-1, 1)
    scores = logits.softmax(1)
    if quantise:
        scores = (scores * 10).round() / 10  # many ties, which scikit-learn groups into one threshold
    ap = average_precision_per_class(scores, target)
    y = target.flatten().numpy()
    s = scores.movedim(1, -1).reshape(-1, K).numpy()
    expected = [average_precision_score(y == c, s[:, c]) for c in range(K - 1)]
    np.testing.assert_allclose(ap[:K - 1].numpy(), expected, rtol=1e-10)
    assert ap[K - 1].isnan()
    assert mean_average_precision(scores, target) == pytest.approx(np.mean(expected))
    assert worst_group_ap(scores, target) == pytest.approx(min(expected))


def test_average_precision_subsampling_is_seeded_and_matches_scikit_learn_on_the_sample():
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 3, (8, 16, 16), generator=g)
    scores = (torch.randn(8, 3, 16, 16, generator=g) + torch.nn.functional.one_hot(target, 3).movedim(-1, 1)).softmax(1)
    a = average_precision_per_class(scores, target, max_pixels=500, seed=1)
    assert torch.equal(a, average_precision_per_class(scores, target, max_pixels=500, seed=1))
    assert not torch.equal(a, average_precision_per_class(scores, target, max_pixels=500, seed=2))
    keep = torch.randperm(8 * 16 * 16, generator=torch.Generator().manual_seed(1))[:500]  # the documented draw
    y = target.flatten()[keep].numpy()
    s = scores.movedim(1, -1).reshape(-1, 3)[keep].numpy()
    np.testing.assert_allclose(a.numpy(), [average_precision_score(y == c, s[:, c]) for c in range(3)], rtol=1e-10)
    full = average_precision_per_class(scores, target)
    assert (a - full).abs().max() < 0.1  # a sample of 500 pixels estimates the full AP
    torch.testing.assert_close(average_precision_per_class(scores, target, max_pixels=10**6), full)


def test_perfect_scores_give_ap_one_and_report_collects_everything():
    target = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [1, 2]]])
    scores = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    report = segmentation_report(scores, target)
    assert report["mAP"] == 1.0 and report["WGAP"] == 1.0 and report["mIoU"] == 1.0
    assert report["ap"].shape == report["iou"].shape == (3,)
    flipped = segmentation_report(1 - scores, target)  # every true class gets the lowest score
    assert flipped["WGAP"] < 0.5 and flipped["mIoU"] == 0.0
    with pytest.raises(ValueError, match=r"scores must be \(B, K, ...\)"):
        average_precision_per_class(scores[:, 0], target)


def test_precision_recall_curves_give_sklearns_ap_and_curve():
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from course_utils.metrics import precision_recall_curves

    g = torch.Generator().manual_seed(5)
    target = torch.randint(0, 4, (3, 10, 10), generator=g)
    scores = (torch.randn(3, 4, 10, 10, generator=g) + 2 * torch.nn.functional.one_hot(target, 4).movedim(-1, 1)
              ).softmax(1).round(decimals=2)  # rounding makes ties, which sklearn groups as one threshold
    curves = precision_recall_curves(scores, target)
    ap = average_precision_per_class(scores, target)
    for c, (precision, recall) in enumerate(curves):
        y, s = (target == c).reshape(-1).numpy(), scores[:, c].reshape(-1).numpy()
        # AP as the area under the step curve equals both ours and sklearn's
        area = float(((recall - torch.cat([recall.new_zeros(1), recall[:-1]])) * precision).sum())
        assert area == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert float(ap[c]) == pytest.approx(area, abs=1e-12)
        p_sk, r_sk, _ = precision_recall_curve(y, s)  # sklearn: increasing thresholds, then the (1, 0) end point
        np.testing.assert_allclose(precision.numpy(), p_sk[:-1][::-1], atol=1e-12)
        np.testing.assert_allclose(recall.numpy(), r_sk[:-1][::-1], atol=1e-12)
    sampled = precision_recall_curves(scores, target, max_pixels=150, seed=1)
    ap_sampled = average_precision_per_class(scores, target, max_pixels=150, seed=1)
    p, r = sampled[0]
    assert float(((r - torch.cat([r.new_zeros(1), r[:-1]])) * p).sum()) == pytest.approx(float(ap_sampled[0]))
    assert precision_recall_curves(scores, torch.zeros_like(target))[1] is None  # no positives: no curve
