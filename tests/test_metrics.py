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
