import pytest
import torch
from sklearn import metrics as skm

from course_utils.metrics import accuracy, confusion_matrix, f1_scores, macro_f1, micro_f1


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
