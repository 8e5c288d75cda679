"""Looking inside a trained network: ``maps`` (CAM, Grad-CAM, occlusion sensitivity), ``receptive``
(receptive fields: computed, tabled layer by layer, and measured), ``filters`` (top-activating patches,
filter ablation)."""

from course_utils.interpret.filters import (AblationEffect, TopPatches, ablate_filters, ablation_effect,
                                            class_selectivity, cut_patch, max_responses, top_activating_patches)
from course_utils.interpret.maps import (cam, explain, gradcam, gradcam_reference, normalize_maps,
                                         occlusion_object_share, occlusion_sensitivity)
from course_utils.interpret.receptive import (Field, gradient_field, layer_field, nonzero_box, receptive_field,
                                              receptive_field_of_stack)

__all__ = ["AblationEffect", "Field", "TopPatches", "ablate_filters", "ablation_effect", "cam", "class_selectivity",
           "cut_patch", "explain", "gradcam", "gradcam_reference", "gradient_field", "layer_field", "max_responses",
           "nonzero_box", "normalize_maps", "occlusion_object_share", "occlusion_sensitivity", "receptive_field",
           "receptive_field_of_stack", "top_activating_patches"]
