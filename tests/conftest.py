"""Shared fixtures: small seeded simulated movies written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def small_movie(tmp_path_factory):
    """A 128x128, 300-frame simulated movie with 20 blinking emitters and its truth file.

    Same physics as the acceptance movie (2000 photons per on-frame, background
    20 photons/px, PSF sigma 1.3 px, drift up to 3 px), smaller so CI stays fast.
    """
    from plstream.acquire_adapters import SimulationParams, write_movie

    folder = tmp_path_factory.mktemp("movie")
    params = SimulationParams(shape=(128, 128), n_frames=300, n_emitters=20)
    path = folder / "small.tif"
    truth_path = write_movie(path, params, seed=7)
    return path, truth_path, params


@pytest.fixture
def context():
    """A ZeroMQ context for one test; its sockets are dropped unsent at the end (linger 0)."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _shared_data() -> Path:
    """``$PLSTREAM_SHARED_DATA``, else ``../shared/data`` next to the repository (where CI keeps it)."""
    configured = os.environ.get("PLSTREAM_SHARED_DATA")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def bright_field_dir():
    """Five real 500x500 16-bit bright-field frames (dark particles on a scratched field), or a skip.

    Data: the image-alignment pipeline's example_data1 by Viacheslav Shkirskiy (CC BY 4.0), see its README.
    """
    folder = (_shared_data() / "bright-field-particles").resolve()
    if not (folder / "1.tif").is_file():
        pytest.skip(
            f"the real bright-field frames are not at {folder}; set PLSTREAM_SHARED_DATA to the folder holding "
            "bright-field-particles/ to run this test"
        )
    return folder
