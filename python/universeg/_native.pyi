"""Type stubs of universeg._native, the compiled module that the package re-exports."""
import os
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

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

def load(path: _Path) -> Model:
    """Loads a UniverSeg model from a PyTorch checkpoint (.pt) or a safetensors file."""


class Support:
    """A support set: the labelled examples that define a task, in the order added."""

    def __init__(self, folder: Optional[_Path] = None) -> None:
        """An empty support, or the pairs of a folder (DIR/images/NAME.ext with DIR/labels/NAME.ext)."""
    @staticmethod
    def from_arrays(
        images: Sequence[npt.ArrayLike], labels: Sequence[npt.ArrayLike], names: Optional[Sequence[str]] = None
    ) -> Support:
        """A support of the pairs (images[k], labels[k]), as add() adds them."""
    def add_folder(self, folder: _Path) -> Support:
        """Adds every pair of a folder; returns the support."""
    def add(self, image: npt.ArrayLike, labels: npt.ArrayLike, name: Optional[str] = None) -> Support:
        """Adds one pair: an image (H,W) or volume (X,Y,Z) and its integer label map; returns the support."""
    def __len__(self) -> int:
        """The number of pairs."""
    @property
    def files(self) -> List[str]:
        """The files it reads, images and label maps, of the folders added."""

class Segmentation:
    """What a query became, at its size (Segmenter.segment())."""

    @property
    def labels(self) -> npt.NDArray[np.int32]:
        """The int32 label map, the query's shape."""
    @property
    def values(self) -> List[int]:
        """The label values segmented, ascending."""
    @property
    def probabilities(self) -> Optional[npt.NDArray[np.float32]]:
        """float32 (L, *labels.shape): probabilities[i] of values[i]; None without probabilities."""
    def save(self, path: _Path) -> None:
        """Writes the label map as `universeg segment` does: PNG for an image, NIfTI for a volume."""

class Segmenter:
    """Segments images and volumes like the examples of a support set, calibrated once."""

    def __init__(
        self,
        model: Model,
        support: Union[Support, _Path],
        *,
        size: Union[None, int, Tuple[int, int]] = None,
        threshold: float = 0.5,
        calibrate: bool = True,
        flips: Literal[1, 2, 4] = 4,
        ensemble: int = 1,
        support_size: Optional[int] = None,
        seed: int = 0,
        tile: Union[int, Literal["auto"]] = 0,
        clip: Tuple[float, float] = (0.0, 100.0),
        axis: Literal[0, 1, 2] = 2,
        only_values: Optional[Sequence[int]] = None,
        histogram_baseline: bool = False,
        keep_probabilities: bool = True,
        max_memory: Optional[float] = None,
        threads: Optional[int] = None,
    ) -> None:
        """Reads and prepares the support, builds the task and calibrates it."""
    def segment(self, query: Union[npt.ArrayLike, _Path], *, threads: Optional[int] = None) -> Segmentation:
        """Segments a 2-D image (H,W), a volume (X,Y,Z) or an image or NIfTI file, at its size."""
    @property
    def values(self) -> List[int]:
        """The label values segmented, ascending."""
    @property
    def size(self) -> Tuple[int, int]:
        """The model size (H, W) the examples and queries are resized to."""
    @property
    def tile(self) -> int:
        """The window side queries are segmented in; 0: whole images."""
    @property
    def examples(self) -> int:
        """The examples the task was built from."""
    @property
    def calibration(self) -> Optional[Dict[str, object]]:
        """images, dice_before, dice_after, offsets and intensity_weights per label value; None when not calibrated."""

def load_image(path: _Path) -> npt.NDArray[np.float32]:
    """An image file as a float32 array (H,W) in [0, 1]; colour becomes grey."""

def load_label_map(path: _Path) -> npt.NDArray[np.int32]:
    """A label map file as an int32 array (H,W) of its raw values."""

def save_labels(path: _Path, labels: npt.ArrayLike) -> None:
    """Writes a label map: (H,W) as a PNG, (X,Y,Z) as NIfTI."""
