import pytest
import torch

from course_utils.models.embedding import EmbeddingClassifier, EmbeddingNet, TripletNet
from course_utils.models.resnet import resnet6n2


def _embed():
    torch.manual_seed(0)
    return EmbeddingNet(resnet6n2(1, 10, norm="torch_bn"), feature_dim=64, embed_dim=8).eval()


def test_embeddings_are_unit_vectors_from_pooled_features():
    embed = _embed()
    x = torch.randn(5, 1, 28, 28)
    z = embed(x)
    assert z.shape == (5, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    pooled = embed.backbone.forward_head(embed.backbone.forward_features(x), pre_logits=True)
    torch.testing.assert_close(z, torch.nn.functional.normalize(embed.proj(pooled), dim=1))


def test_triplet_net_embeds_each_channel_as_an_image():
    embed = _embed()
    a, p, n = (torch.randn(4, 1, 28, 28) for _ in range(3))
    out = TripletNet(embed)(torch.cat([a, p, n], 1))
    assert out.shape == (4, 3, 8)
    for i, part in enumerate((a, p, n)):
        torch.testing.assert_close(out[:, i], embed(part), atol=1e-5, rtol=1e-5)


def test_embedding_classifier_puts_the_logit_first():
    embed = _embed()
    clf = EmbeddingClassifier(embed, 8).eval()
    x = torch.randn(3, 1, 28, 28)
    out = clf(x)
    assert out.shape == (3, 9)
    torch.testing.assert_close(out[:, 1:], embed(x))
    torch.testing.assert_close(out[:, :1], clf.head(embed(x)))


def test_feature_dim_is_read_from_the_backbone_and_num_features_is_the_embedding():
    torch.manual_seed(0)
    backbone = resnet6n2(1, 10, norm="torch_bn", widths=(4, 8, 12))
    embed = EmbeddingNet(backbone, embed_dim=5)
    assert embed.proj.in_features == 12 and embed.num_features == 5
    assert sum(p.numel() for p in embed.parameters()) == sum(p.numel() for p in backbone.parameters()) + 12 * 5 + 5
    clf = EmbeddingClassifier(embed, 5)
    x = torch.randn(3, 1, 28, 28)
    clf.eval()
    torch.testing.assert_close(clf.forward_head(clf.forward_features(x), pre_logits=True), embed(x))
    with pytest.raises(ValueError, match="feature_dim"):
        EmbeddingNet(torch.nn.Conv2d(1, 2, 3))


def test_gradients_reach_backbone_projection_and_head():
    clf = EmbeddingClassifier(_embed().train(), 8)
    out = clf(torch.randn(4, 1, 28, 28))
    torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.tensor([0.0, 1, 0, 1])).backward()
    for name, p in clf.named_parameters():
        if name.startswith("embed.backbone.fc"):  # the backbone's own classifier is not on the path
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_double_embedding_net_takes_float32_images_and_agrees_with_float32():
    embed = _embed()
    x = torch.randn(6, 1, 28, 28)
    z32 = embed(x)
    double = _embed().double()  # the same initial weights, in float64
    z64 = double(x)  # float32 images are cast to the parameters' dtype
    assert z64.dtype == torch.float64 and z32.dtype == torch.float32
    torch.testing.assert_close(z64.float(), z32, atol=1e-5, rtol=1e-5)
    out = TripletNet(double)(torch.randn(2, 3, 28, 28))
    assert out.dtype == torch.float64 and out.shape == (2, 3, 8)
