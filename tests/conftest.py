"""Shared fixtures: small seeded simulated movies written once per test session."""

from __future__ import annotations

import os

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
