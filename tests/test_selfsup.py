"""Representation monitoring (kNN vs scikit-learn, collapse check), the linear probe, and the BYOL loop."""

import math

import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from course_utils.augment import TwoViews, byol_augment
from course_utils.loader import TensorLoader
from course_utils.models import BYOL, resnet6n2
from course_utils.selfsup import (KNNProbe, embedding_std, knn_accuracy, knn_predict, linear_probe, pooled_features,
                                  pretrain_byol)
from course_utils.train import DivergenceError


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: a second thread costs more than it saves, and far more on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def tiny_setup(n=64):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(n) % 2
    model = BYOL(resnet6n2(1, 2, norm="torch_bn", widths=(4, 8, 8)), projector_dim=8, hidden_dim=16)
    loader = TensorLoader(images, torch.zeros(n), 16, shuffle=True, augment=TwoViews(byol_augment()), drop_last=True,
                          seed=0, mean=0.3, std=0.3)
    opt = torch.optim.SGD(model.online_parameters(), lr=0.05, momentum=0.9)
    probe = KNNProbe(images[:32], labels[:32], images[32:], labels[32:], k=5, mean=0.3, std=0.3)
    return model, loader, opt, probe


def test_pretrain_records_every_epoch_and_moves_the_target_by_ema():
    model, loader, opt, probe = tiny_setup()
    target_before = [p.clone() for p in model.target_parameters()]
    h = pretrain_byol(model, loader, epochs=2, optimizer=opt, probe=probe, progress=False, verbose=False)
    assert h["epoch"] == [0, 1, 2]
    assert h.records[0].keys() >= {"knn_acc", "collapse_std"} and "train_loss" not in h.records[0]
    for rec in h.records[1:]:
        assert 0 <= rec["train_loss"] <= 8 and 0 <= rec["knn_acc"] <= 1 and rec["collapse_std"] >= 0
    assert h.records[-1]["tau"] == pytest.approx(1 - 0.01 * (math.cos(math.pi * 7 / 8) + 1) / 2)
    assert any(not torch.equal(a, b) for a, b in zip(target_before, model.target_parameters()))


def test_pretrain_resumes_exactly_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "byol.pt"
    model, loader, opt, probe = tiny_setup()
    straight = pretrain_byol(model, loader, epochs=2, optimizer=opt, probe=probe, progress=False, verbose=False)
    model_a, loader_a, opt_a, probe_a = tiny_setup()

    class Interrupted(Exception):
        pass

    class DiesInEpoch2(TensorLoader):  # the runtime dies when the second epoch begins
        def set_epoch(self, epoch):
            if epoch == 1:
                raise Interrupted
            super().set_epoch(epoch)

    loader_a.__class__ = DiesInEpoch2
    with pytest.raises(Interrupted):
        pretrain_byol(model_a, loader_a, epochs=2, optimizer=opt_a, probe=probe_a, checkpoint=ckpt, progress=False,
                      verbose=False)
    model_b, loader_b, opt_b, probe_b = tiny_setup()  # a fresh process would rebuild everything
    resumed = pretrain_byol(model_b, loader_b, epochs=2, optimizer=opt_b, probe=probe_b, checkpoint=ckpt,
                            progress=False, verbose=False)
    assert [p.name for p in tmp_path.iterdir()] == ["byol.pt"]
    assert resumed["epoch"] == [0, 1, 2]
    assert resumed["train_loss"][1:] == pytest.approx(straight["train_loss"][1:], rel=1e-5)
    for a, b in zip(model.state_dict().values(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_pretrain_stops_on_a_nan_loss_and_checks_its_arguments():
    model, loader, opt, _ = tiny_setup()
    with torch.no_grad():
        model.backbone.stem[0].weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="epoch 1, step 1"):
        pretrain_byol(model, loader, epochs=1, optimizer=opt, progress=False, verbose=False)
    with pytest.raises(TypeError, match="BYOL"):
        pretrain_byol(resnet6n2(1, 2), loader, epochs=1, optimizer=opt)
    with pytest.raises(ValueError, match="epochs"):
        pretrain_byol(model, loader, epochs=0, optimizer=opt)


def test_adamw_warmup_cosine_rises_then_falls_to_zero():
    from course_utils.selfsup import adamw_warmup_cosine

    w, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    opt, sched = adamw_warmup_cosine([w, b], lr=0.1, total_steps=20, weight_decay=0.5, warmup=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]  # no decay on the 1-D bias
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)  # two warm-up steps
    assert lrs[2] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.05, rel=0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_recalibrate_batchnorm_replaces_running_statistics_by_those_of_the_images():
    from course_utils.selfsup import recalibrate_batchnorm

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
