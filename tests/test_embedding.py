import torch

from course_utils.models import EmbeddingClassifier, EmbeddingNet, TripletNet, resnet6n2


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
