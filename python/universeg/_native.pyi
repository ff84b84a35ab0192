"""Type stubs of universeg._native, the compiled module that the package re-exports."""
import os
from typing import Dict, Literal, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class Model:
    """A UniverSeg model: weights loaded by universeg.load(), run by the C++ engine."""

    def __call__(
        self,
        query: npt.ArrayLike,
        support_images: npt.ArrayLike,
        support_labels: npt.ArrayLike,
        *,
        precision: Literal["fp32", "bf16"] = "fp32",
        threads: Optional[int] = None,
        max_memory: Optional[float] = None,
    ) -> npt.NDArray[np.float32]:
        """The logits (B,1,H,W), float32, for query (B,1,H,W) and supports (B,S,1,H,W)."""
    @property
    def config(self) -> str:
        """The architecture, e.g. 'encoder [64,64,64,64] decoder [64,64,64]'."""
    @property
    def parameter_count(self) -> int:
        """The number of weights and biases."""
    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
    @property
    def image_size(self) -> Optional[Tuple[int, int]]:
        """(H, W) the weights were trained at, from a safetensors file's metadata, or None."""
    @property
    def metadata(self) -> Dict[str, str]:
        """A safetensors file's __metadata__ strings; empty for PyTorch checkpoints."""
    @property
    def path(self) -> str:
        """The weights file it was loaded from."""

def load(path: Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]) -> Model:
    """Loads a UniverSeg model from a PyTorch checkpoint (.pt) or a safetensors file."""
