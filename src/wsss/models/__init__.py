"""Networks: backbones (timm by name), classification heads, segmentation decoders."""
