"""UniverSeg (Butoi et al., ICCV 2023): few-shot medical image segmentation from numpy, by the
C++ engine of UniverSeg in C++, called as the official PyTorch model is:

    import universeg
    model = universeg.load("universeg_v1_nf64_ss64_STA.pt")   # official .pt, or .safetensors
    logits = model(query, support_images, support_labels)      # (B,1,H,W), (B,S,1,H,W) x 2
    probabilities = 0.5 + 0.5 * numpy.tanh(0.5 * logits)       # sigmoid; logits float32 (B,1,H,W)

See help(universeg.Model) and help(universeg.load); docs/python.md in the source tree.
"""
from ._native import Model, __version__, load

# The segmentation API (support sets from folders or arrays, calibration, label maps: issue 40)
# joins the model here, bound in _native beside it, once the library's segment/ provides it.
__all__ = ["Model", "load"]
