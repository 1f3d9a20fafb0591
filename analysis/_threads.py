"""How numba's worker threads wait between parallel kernels.

With the OpenMP threading layer, idle workers spin by default
(``OMP_WAIT_POLICY=ACTIVE`` behaviour in libgomp). On a machine with as many
cores as threads, where the frame source, ZeroMQ's I/O threads, the HDF5 writer
and a dashboard share the cores with the analyzer, the spinning workers steal
the time the others need: measured on 2 cores (``benchmarks/latency.py --size
512 --emitters 300 --rates 100``), the p99 publish-to-result latency is 22 ms
with spinning workers and 6.6 ms with passive ones, and an analyzer competing
with another busy process fell from 540 to 113 frames/s. Passive waiting costs
~20 % of the analyzer's in-process speed on an otherwise idle machine
(812 -> 664 frames/s at 512x512, 300 spots) and nothing end to end.

libgomp reads the policy once, when numba first starts its thread pool, so it
must be set before the first parallel kernel runs. A policy the user set in
the environment is kept.
"""

from __future__ import annotations

import logging
import os

__all__ = ["prefer_passive_waiting"]

logger = logging.getLogger(__name__)


def prefer_passive_waiting() -> None:
    """Make idle OpenMP workers sleep instead of spin, unless ``OMP_WAIT_POLICY`` is already set."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        logger.debug("OMP_WAIT_POLICY=PASSIVE (idle numba workers sleep; set OMP_WAIT_POLICY to override)")
