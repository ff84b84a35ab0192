"""UniverSeg (Butoi et al., ICCV 2023): few-shot medical image segmentation from numpy, by the
C++ engine of UniverSeg in C++.

The model, called as the official PyTorch model is:

    import universeg
    model = universeg.load("universeg_v1_nf64_ss64_STA.pt")   # official .pt, or .safetensors
    logits = model(query, support_images, support_labels)      # (B,1,H,W), (B,S,1,H,W) x 2
    probabilities = 0.5 + 0.5 * numpy.tanh(0.5 * logits)       # sigmoid; logits float32 (B,1,H,W)

The segmentation API, images of any size and label maps of any integer values:

    seg = universeg.Segmenter(model, "support/")    # DIR/images/NAME.png + DIR/labels/NAME.png
    result = seg.segment("query.png")               # or a 2-D array, a volume, a NIfTI file
    result.labels, result.probabilities             # int32 label map, float32 (L,H,W)

See help(universeg.Model), help(universeg.Segmenter); docs/python.md in the source tree.
"""
from ._native import (Model, Segmentation, Segmenter, Support, __version__, load, load_image, load_label_map,
                      save_labels)

__all__ = ["Model", "Segmentation", "Segmenter", "Support", "load", "load_image", "load_label_map", "save_labels"]
