"""Looking inside a trained network: ``maps`` (CAM, Grad-CAM, occlusion sensitivity), ``receptive``
(receptive fields, computed and measured), ``filters`` (top-activating patches, filter ablation)."""

from course_utils.interpret.filters import (AblationEffect, TopPatches, ablate_filters, ablation_effect, cut_patch,
                                            top_activating_patches)
from course_utils.interpret.maps import cam, gradcam, gradcam_reference, normalize_maps, occlusion_sensitivity
from course_utils.interpret.receptive import (Field, gradient_field, layer_field, nonzero_box, receptive_field,
                                              receptive_field_of_stack)

__all__ = ["AblationEffect", "Field", "TopPatches", "ablate_filters", "ablation_effect", "cam", "cut_patch",
           "gradcam", "gradcam_reference", "gradient_field", "layer_field", "nonzero_box", "normalize_maps",
           "occlusion_sensitivity", "receptive_field", "receptive_field_of_stack", "top_activating_patches"]
