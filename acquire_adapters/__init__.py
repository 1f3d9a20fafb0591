"""Frame sources: the simulated camera and the file adapters, behind one small interface.

Every source implements :class:`FrameSource` (``describe()``, iteration over
:class:`Frame` objects, ``close()``) and reports unusable input as
:class:`InputError` (:class:`CorruptInputError` for damaged content).
:func:`open_source` picks the adapter for a path.
"""

from plstream.acquire_adapters.base import CorruptInputError, Frame, FrameSource, InputError
from plstream.acquire_adapters.simulated import SimulatedCamera, SimulationParams, write_movie
from plstream.acquire_adapters.sources import open_source
from plstream.acquire_adapters.tiff_folder import TiffFolderSource
from plstream.acquire_adapters.tiff_stack import TiffStackSource
from plstream.acquire_adapters.truth import TRUTH_FORMAT_VERSION, SimulationTruth, load_truth, save_truth
from plstream.acquire_adapters.video import VideoSource

__all__ = [
    "Frame",
    "FrameSource",
    "InputError",
    "CorruptInputError",
    "SimulationParams",
    "SimulatedCamera",
    "SimulationTruth",
    "TRUTH_FORMAT_VERSION",
    "write_movie",
    "save_truth",
    "load_truth",
    "TiffStackSource",
    "TiffFolderSource",
    "VideoSource",
    "open_source",
]
