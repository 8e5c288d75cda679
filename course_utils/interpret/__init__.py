"""Looking inside a trained network: ``maps`` (CAM, Grad-CAM, occlusion sensitivity), ``receptive``
(receptive fields: computed, tabled layer by layer, and measured), ``filters`` (top-activating patches,
filter ablation)."""
