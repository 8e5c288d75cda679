"""Inference and probes: predict and what is built on it, kNN vs scikit-learn, the collapse check, the linear
probe, batch-norm recalibration and the kNN monitor of BYOL."""

import math

import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from course_utils.features import (KNNProbe, embedding_std, evaluate_segmenter, knn_accuracy, knn_predict,
                                   linear_probe, pooled_features, predict, predict_proba, recalibrate_batchnorm)
from course_utils.loader import TensorLoader
from course_utils.models.byol import BYOL
from course_utils.models.resnet import resnet6n2
from tests.conftest import toy_segmentation


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


def clusters(n=120, d=8, classes=3, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 2
    y = torch.arange(n) % classes
    return centres[y] + spread * torch.randn(n, d, generator=g), y


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_matches_scikit_learn_with_cosine_distance(k, weights):
    bank, y = clusters(150, spread=2.5)
    queries, _ = clusters(80, seed=1, spread=2.5)
    ours = knn_predict(bank, y, queries, k=k, weights=weights)
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weights, algorithm="brute")
    theirs = sk.fit(bank.numpy(), y.numpy()).predict(queries.numpy())
    assert ours.tolist() == theirs.tolist()


def test_knn_keeps_arbitrary_labels_and_computes_accuracy():
    bank, y = clusters(90, spread=0.3)
    labels = torch.tensor([7, 3, 11])[y]  # non-contiguous label values come back as they were
    queries, yq = clusters(30, seed=0, spread=0.3)
    pred = knn_predict(bank, labels, queries, k=5)
    assert set(pred.tolist()) <= {3, 7, 11}
    assert knn_accuracy(bank, labels, queries, torch.tensor([7, 3, 11])[yq], k=5) == pytest.approx(
        (pred == torch.tensor([7, 3, 11])[yq]).float().mean().item())
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(bank, labels, queries, k=0)
    with pytest.raises(ValueError, match="weights"):
        knn_predict(bank, labels, queries, weights="gaussian")


def test_distance_weights_give_an_exact_match_all_the_vote():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0, 1])
    assert knn_predict(bank, labels, torch.tensor([[2.0, 0.0]]), k=3, weights="distance").tolist() == [1]
    assert knn_predict(bank, labels, torch.tensor([[2.0, 0.0]]), k=3, weights="uniform").tolist() == [0]


def test_embedding_std_is_one_over_sqrt_d_when_spread_and_zero_when_collapsed():
    d = 64
    spread = torch.randn(4000, d, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(d), rel=0.03)
    collapsed = torch.randn(1, d).repeat(500, 1) * torch.rand(500, 1)  # one direction, any length
    assert embedding_std(collapsed) < 1e-7
    nearly = collapsed + 1e-3 * torch.randn(500, d)
    assert 0 < embedding_std(nearly) < 0.1 / math.sqrt(d)
    with pytest.raises(ValueError, match="N >= 2"):
        embedding_std(torch.randn(1, d))


def test_linear_probe_separates_clusters_and_fails_on_noise():
    x0, y0 = clusters(300, d=16, seed=0, spread=0.5)
    assert linear_probe(x0[:200], y0[:200], x0[200:], y0[200:]) > 0.95
    noise = torch.randn(300, 16, generator=torch.Generator().manual_seed(5))
    assert linear_probe(noise[:200], y0[:200], noise[200:], y0[200:]) < 0.6
    assert linear_probe(x0[:200], y0[:200], x0[200:], y0[200:], Cs=(1.0,)) > 0.95  # fixed C, no search


def test_pooled_features_restore_the_mode_and_match_the_backbone():
    model = resnet6n2(1, 10, norm="torch_bn", widths=(4, 8, 8)).train()
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    f = pooled_features(model, images, batch_size=4, mean=0.5, std=0.25)
    assert f.shape == (10, 8) and model.training
    model.eval()
    with torch.no_grad():
        expected = model.forward_head(model.forward_features((images.float() / 255 - 0.5) / 0.25), pre_logits=True)
    torch.testing.assert_close(f, expected)


def test_recalibrate_batchnorm_replaces_running_statistics_by_those_of_the_images():
    model = resnet6n2(1, 2, norm="torch_bn", widths=(4, 8, 8)).eval()
    images = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8)
    x = (images.float() / 255 - 0.3) / 0.3
    with torch.no_grad():
        model.stem[1].running_mean.fill_(5.0)  # stale statistics, e.g. from augmented views
        stem_out = model.stem[0](x)  # what the first batch norm sees
        weights = [p.clone() for p in model.parameters()]
    recalibrate_batchnorm(model, images, batch_size=60, mean=0.3, std=0.3)  # one batch: exact statistics
    bn = model.stem[1]
    torch.testing.assert_close(bn.running_mean, stem_out.mean((0, 2, 3)))
    torch.testing.assert_close(bn.running_var, stem_out.var((0, 2, 3), unbiased=True))
    assert not model.training and bn.momentum == 0.1  # mode and momentum restored
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # weights untouched
    recalibrate_batchnorm(model, images, batch_size=20, mean=0.3, std=0.3)  # three equal batches: the same mean
    torch.testing.assert_close(bn.running_mean, stem_out.mean((0, 2, 3)))


def tiny_net():
    return nn.Conv2d(1, 2, 3, padding=1)  # linear: a pixel's class is a threshold on its value


def test_predict_proba_and_evaluate():
    images, masks = toy_segmentation()
    model = tiny_net().train()
    p = predict_proba(model, images, batch_size=5)
    assert p.shape == (24, 2, 8, 8)
    torch.testing.assert_close(p.sum(1), torch.ones(24, 8, 8))
    assert model.training  # the caller's mode is restored
    report = evaluate_segmenter(model, images, masks, max_pixels=500)
    assert set(report) >= {"mIoU", "mAP", "WGAP", "iou", "ap"} and report["ap"].shape == (2,)


def _bn_model():
    torch.manual_seed(0)
    model = resnet6n2(1, 3, norm="torch_bn", widths=(4, 8, 8)).train()
    with torch.no_grad():
        model(torch.randn(16, 1, 28, 28))  # non-trivial running statistics, so train and eval differ
    return model


def test_predict_runs_in_eval_mode_without_gradients_and_restores_the_mode():
    model = _bn_model()
    model.stem[1].train(False)  # a mixed state: one submodule already in eval mode
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    out = predict(model, images, batch_size=4, mean=0.5, std=0.25)
    assert out.shape == (10, 3) and out.dtype == torch.float32 and not out.requires_grad
    assert model.training and not model.stem[1].training  # every submodule's own flag is back
    model.eval()
    with torch.no_grad():
        expected = model((images.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(out, expected)
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model((images.float() / 255 - 0.5) / 0.25), expected)  # train mode would differ


def test_predict_takes_a_loader_or_images_and_a_forward_function():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(23, 3, generator=g)
    head = nn.Linear(3, 2)
    from_loader = predict(head, TensorLoader(feats, torch.zeros(23), 10))
    from_images = predict(head, feats, batch_size=7)
    assert torch.equal(from_loader, from_images)  # a row's output does not depend on the batching here
    torch.testing.assert_close(from_loader, head(feats).detach())
    doubled = predict(head, feats, forward=lambda x: 2 * head(x))
    torch.testing.assert_close(doubled, 2 * from_images)


def test_knn_probe_watches_without_changing_the_model():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(40) % 2
    model = BYOL(resnet6n2(1, 2, norm="torch_bn", widths=(4, 8, 8)), projector_dim=8, hidden_dim=16).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    probe = KNNProbe(images[:20], labels[:20], images[20:], labels[20:], k=5, mean=0.3, std=0.3)
    out = probe(model)
    assert set(out) == {"knn_acc", "collapse_std"} and 0 <= out["knn_acc"] <= 1 and out["collapse_std"] > 0
    bank = pooled_features(model.backbone, images[:20], mean=0.3, std=0.3)
    queries = pooled_features(model.backbone, images[20:], mean=0.3, std=0.3)
    assert out["knn_acc"] == knn_accuracy(bank, labels[:20], queries, labels[20:], k=5)
    assert model.training and model.projector.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # running statistics untouched


def test_train_linear_head_separates_clusters_reproducibly_and_is_fit_on_a_linear_layer():
    import functools

    from course_utils.features import train_linear_head
    from course_utils.losses import binary_cross_entropy
    from course_utils.metrics import accuracy
    from course_utils.optim import adam_constant, sgd_one_cycle
    from course_utils.train import fit
    x, y = clusters(n=120, d=8, classes=3, seed=0, spread=0.5)
    head = train_linear_head(x, y, 3, epochs=5, lr=0.1, seed=0)
    assert isinstance(head, nn.Linear) and not head.training and accuracy(head(x), y) > 0.9
    again = train_linear_head(x, y, 3, epochs=5, lr=0.1, seed=0)
    assert torch.equal(head.weight, again.weight)
    # the same as the loop written out: seed, fresh layer, seeded loader, optimizer(head, lr, steps), fit
    torch.manual_seed(1)
    ref = nn.Linear(8, 3)
    loader = TensorLoader(x, y, 32, shuffle=True, seed=1)
    opt, _ = adam_constant(ref, 1e-2)
    fit(ref, loader, epochs=2, optimizer=opt, progress=False, verbose=False)
    ours = train_linear_head(x, y, 3, epochs=2, lr=1e-2, seed=1, batch_size=32, optimizer=adam_constant)
    torch.testing.assert_close(ours.weight, ref.weight, rtol=0, atol=0)
    # one sigmoid output with BCE, and a start from a given layer that is left unchanged
    yb = (y == 0).long()
    binary = train_linear_head(x, yb, 1, epochs=5, lr=0.5, seed=0, loss_fn=binary_cross_entropy,
                               optimizer=functools.partial(sgd_one_cycle, weight_decay=0.0))
    assert accuracy(binary(x), yb) > 0.9
    before = binary.weight.clone()
    tuned = train_linear_head(x, yb, 1, epochs=1, lr=0.1, seed=0, loss_fn=binary_cross_entropy, init=binary)
    assert torch.equal(binary.weight, before) and not torch.equal(tuned.weight, before)


def test_predict_under_a_dry_run_computes_few_batches_and_keeps_the_shape(monkeypatch):
    from torch import nn

    calls = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    images = torch.rand(23, 1, 4, 4)
    full = predict(model, images, batch_size=5)
    monkeypatch.setenv("COURSE_DRY_RUN", "2")
    calls.clear()
    dry = predict(model, images, batch_size=5)
    assert dry.shape == full.shape == (23, 3) and calls == [5]  # the first batch (fewer rows than DRY_RUN_ROWS)
    assert torch.equal(dry[:5], full[:5]) and torch.equal(dry[5:10], full[:5])  # the computed rows, repeated
    monkeypatch.setattr("course_utils.runtime.DRY_RUN_ROWS", 2)
    calls.clear()
    dry = predict(model, images, batch_size=5)
    assert dry.shape == (23, 3) and calls == [2] and torch.equal(dry[2:4], full[:2])


def test_class_separation_scores_each_space_and_matches_scikit_learn():
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    from course_utils.features import class_separation

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    apart = torch.randn(60, 8, generator=g) + 6 * torch.nn.functional.one_hot(y, 8).float()
    scores, maps = class_separation(apart, y, k=5)
    assert set(maps) == {"PCA", "t-SNE"} and all(m.shape == (60, 2) for m in maps.values())
    assert set(scores) == {f"{m} {s}" for m in ("knn", "silhouette") for s in ("features", "PCA", "t-SNE")}
    assert scores["knn features"] == 1.0 and scores["knn t-SNE"] == 1.0 and scores["silhouette features"] > 0.2
    x = ((apart - apart.mean(0)) / apart.std(0)).double().numpy()  # the same computation, by hand
    knn = KNeighborsClassifier(5).fit(x[::2], y[::2].numpy())
    assert scores["knn features"] == pytest.approx((knn.predict(x[1::2]) == y[1::2].numpy()).mean())
    assert scores["silhouette PCA"] == pytest.approx(silhouette_score(maps["PCA"], y.numpy()))
    assert scores["silhouette features"] == pytest.approx(silhouette_score(x, y.numpy()))
    noise, _ = class_separation(torch.randn(60, 8, generator=g), y, k=5, spaces=("features",))
    assert set(noise) == {"knn features", "silhouette features"}
    assert noise["knn features"] < 0.7 and abs(noise["silhouette features"]) < 0.1  # no classes to find
    with pytest.raises(ValueError, match="spaces are"):
        class_separation(apart, y, spaces=("UMAP",))
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_separation(apart, torch.zeros(60, dtype=torch.long))
