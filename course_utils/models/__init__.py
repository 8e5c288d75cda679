"""Models of the course. Each exposes ``forward_features`` / ``forward_head`` where it has a classifier."""

from course_utils.models.byol import BYOL
from course_utils.models.deform import DeformConv2d, PairClassifier, ResidualBlock, TwoBlockCNN
from course_utils.models.embedding import EmbeddingClassifier, EmbeddingNet, PooledFeatures, TripletNet
from course_utils.models.resnet import BasicBlock, ResNet, count_weighted_layers, resnet6n2
from course_utils.models.vgg import SimpleCNN, VGGResNet
from course_utils.models.segmentation import DeepLabV3, FCN32s, Hourglass, UNet
from course_utils.models.small_vgg import SmallVGG


def reference_resnet(num_classes: int = 10, in_channels: int = 1) -> ResNet:
    """The course's reference Fashion-MNIST model: ResNet-14 (n = 2) with PyTorch's fused BatchNorm."""
    return resnet6n2(2, num_classes, norm="torch_bn", in_channels=in_channels, widths=(16, 32, 64))


__all__ = ["BYOL", "BasicBlock", "DeformConv2d", "PairClassifier", "ResidualBlock", "TwoBlockCNN", "EmbeddingClassifier", "EmbeddingNet", "PooledFeatures", "ResNet", "TripletNet", "count_weighted_layers",
           "reference_resnet", "resnet6n2", "SimpleCNN", "VGGResNet",
           "DeepLabV3", "FCN32s", "Hourglass", "UNet", "SmallVGG"]
