"""The particles a user chose to measure the drift with (``drift.reference_spots``, ``--drift-spots``).

Three ways to name them:

- spot IDs of a result file of the same movie: ``"0,4,7"``;
- a JSON file written by the image-alignment pipeline (``particle_selections.json``):
  its ``selected_particles`` boxes ``bbox = [x0, y0, x1, y1]`` (the region
  ``image[y0:y1, x0:x1]`` of the first frame), restricted to
  ``selected_particles_for_drift`` when the file lists them;
- a text or CSV file, one particle per line: ``x y`` (a position) or
  ``x0 y0 x1 y1`` (a box, as above), frame-0 px, x = column; blank lines,
  ``#`` comments and a header line are skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DriftReferences", "parse_drift_references"]

_IDS = re.compile(r"^\s*\d+(\s*[,;\s]\s*\d+)*\s*$")


@dataclass(frozen=True)
class DriftReferences:
    """Particles that measure the drift.

    Attributes
    ----------
    ids : tuple of int
        Spot IDs (when given as IDs).
    boxes : (K, 4) float64
        Search boxes ``x0, y0, x1, y1`` (px, frame 0; ``x1``, ``y1`` exclusive);
        a position given as a point gets a box of +-3 px around it.
    source : str
        Where they came from, for the log and the result file.
    """

    ids: tuple[int, ...]
    boxes: np.ndarray
    source: str

    @property
    def centers(self) -> np.ndarray:
        """(K, 2) box centres (x, y), px."""
        b = self.boxes
        return np.column_stack([(b[:, 0] + b[:, 2] - 1) / 2.0, (b[:, 1] + b[:, 3] - 1) / 2.0])

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ids": list(self.ids), "boxes": self.boxes.tolist()}


def _point_box(x: float, y: float, half: float = 3.0) -> list[float]:
    return [x - half, y - half, x + half + 1.0, y + half + 1.0]


def _from_json(path: Path) -> list[list[float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"drift reference file {path} is not readable JSON ({exc})") from exc
    sets = data.get("image_sets") or ([data["image_set"]] if isinstance(data.get("image_set"), dict) else [])
    boxes = []
    for image_set in sets:
        chosen = image_set.get("selected_particles_for_drift")
        for particle in image_set.get("selected_particles") or []:
            if chosen is not None and particle.get("particle_id") not in chosen:
                continue
            bbox = particle.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise ValueError(f"{path}: a selected particle has no bbox [x0, y0, x1, y1]: {particle!r}")
            boxes.append([float(v) for v in bbox])
    if not boxes:
        raise ValueError(
            f"{path} lists no selected particles (expected image_sets[].selected_particles[].bbox, as the "
            "image-alignment pipeline writes)"
        )
    return boxes


def _from_text(path: Path) -> list[list[float]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"drift reference file {path} is not readable text ({exc})") from exc
    boxes: list[list[float]] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f for f in re.split(r"[,;\s]+", text) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not boxes and number == 1:
                continue  # a header line
            raise ValueError(f"{path}, line {number}: expected 'x y' or 'x0 y0 x1 y1' in px, got {line!r}") from None
        if len(values) == 2:
            boxes.append(_point_box(*values))
        elif len(values) == 4:
            boxes.append(values)
        else:
            raise ValueError(f"{path}, line {number}: expected 2 (x y) or 4 (x0 y0 x1 y1) numbers, got {len(values)}")
    if not boxes:
        raise ValueError(f"{path} lists no particles (one 'x y' or 'x0 y0 x1 y1' per line)")
    return boxes


def parse_drift_references(spec: str) -> DriftReferences | None:
    """The particles named by ``drift.reference_spots`` (see the module notes); None for ``""``.

    Raises
    ------
    ValueError
        The text is neither a list of spot IDs nor a readable file of positions (the message says which).
    """
    spec = spec.strip()
    if not spec:
        return None
    if _IDS.match(spec):
        ids = tuple(sorted({int(v) for v in re.split(r"[,;\s]+", spec) if v}))
        return DriftReferences(ids, np.zeros((0, 4)), f"spot IDs {spec}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(
            f"drift reference spots {spec!r}: neither spot IDs (e.g. 0,4,7) nor an existing file of positions "
            "(particle_selections.json, or a text file with 'x y' or 'x0 y0 x1 y1' per line)"
        )
    boxes = _from_json(path) if path.suffix.lower() == ".json" else _from_text(path)
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(array).all() or np.any(array[:, 2] <= array[:, 0]) or np.any(array[:, 3] <= array[:, 1]):
        raise ValueError(f"{path}: every box needs x0 < x1 and y0 < y1 (finite px)")
    return DriftReferences((), array, str(path))
