"""Exports of a result file to the files our users know (the PL trace extractor's and more).

One module per export, each callable from Python and from ``plstream export KIND``:

- :func:`export_csv` (:mod:`.csv`): one row per spot per frame in the trace extractor's schema;
- :func:`load_traces` (:mod:`.traces`): the same rows as a :class:`pandas.DataFrame`;
- :func:`export_image` (:mod:`.image`): the drift-corrected mean with every spot circled and labelled;
- :func:`export_video` (:mod:`.video`): the annotated movie (MP4, streaming);
- :func:`export_fit` (:mod:`.fit`): one spot's Gaussian fit in one frame (data, model, residuals);
- :func:`export_blinking` (:mod:`.blinking`): per-spot blinking figures, summary CSV, ensemble figure;
- :func:`write_aligned` (:mod:`.aligned`): every frame moved back into frame 0 by the inverse rigid drift;
- :func:`validate_alignment` (:mod:`.validation`): the particles re-measured on the aligned frames.

Every export works on a finished result and on one still being written,
and writes its files under a temporary name first.
"""

from plstream.analysis.exports._common import ExportError
from plstream.analysis.exports.aligned import write_aligned
from plstream.analysis.exports.blinking import export_blinking
from plstream.analysis.exports.csv import export_csv
from plstream.analysis.exports.fit import export_fit
from plstream.analysis.exports.image import export_image
from plstream.analysis.exports.traces import load_traces
from plstream.analysis.exports.validation import validate_alignment
from plstream.analysis.exports.video import export_video

__all__ = [
    "ExportError",
    "export_blinking",
    "export_csv",
    "export_fit",
    "export_image",
    "export_video",
    "load_traces",
    "validate_alignment",
    "write_aligned",
]
