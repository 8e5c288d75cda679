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
