"""Layers the models share: ``norms`` (from-scratch norms, ``NORMS``/``make_norm``, ``ACTIVATIONS``/``make_act``),
``blocks`` (``conv_norm``, the one residual ``BasicBlock`` with its shortcut as an option, ``kaiming_init``) and
``deform`` (``deform_conv2d_reference``, ``bilinear_sample`` and the ``DeformConv2d`` layer)."""
