"""Models of the course, one family per module; each exposes ``num_features`` and, where it has a
classifier, ``forward_features`` / ``forward_head``. Layers they share live in ``course_utils.layers``.

==================  ==========================================================  ========
module              models                                                      chapters
==================  ==========================================================  ========
``resnet``          ``resnet6n2`` / ``ResNet``, ``reference_resnet``              0, 1, 4, 5
``vgg``             ``VGGResNet``, ``SimpleCNN``                                2
``deform_nets``     ``TwoBlockCNN``, ``PairClassifier``                         3
``embedding``       ``EmbeddingNet``, ``TripletNet``, ``EmbeddingClassifier``   4
``byol``            ``BYOL``                                                    5
``segmentation``    ``Hourglass``, ``UNet``, ``FCN32s``, ``DeepLabV3``          6
``small_vgg``       ``SmallVGG``                                                7
==================  ==========================================================  ========
"""

from course_utils.models.byol import BYOL
from course_utils.models.deform_nets import PairClassifier, TwoBlockCNN
from course_utils.models.embedding import EmbeddingClassifier, EmbeddingNet, PooledFeatures, TripletNet
from course_utils.models.resnet import ResNet, count_weighted_layers, reference_resnet, resnet6n2
from course_utils.models.vgg import SimpleCNN, VGGResNet
from course_utils.models.segmentation import DeepLabV3, FCN32s, Hourglass, UNet
from course_utils.models.small_vgg import SmallVGG

__all__ = ["BYOL", "DeepLabV3", "EmbeddingClassifier", "EmbeddingNet", "FCN32s", "Hourglass", "PairClassifier",
           "PooledFeatures", "ResNet", "SimpleCNN", "SmallVGG", "TripletNet", "TwoBlockCNN", "UNet", "VGGResNet",
           "count_weighted_layers", "reference_resnet", "resnet6n2"]
