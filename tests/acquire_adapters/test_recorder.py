"""FrameRecorder: lossless round trips, a disk that cannot keep up, write errors, refused frames, killed recorders.

Every wait is bounded: threads are joined and child processes polled against a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import tifffile

from plstream.acquire_adapters import FrameRecorder, InputError, open_movie
from plstream.acquire_adapters.files import _recording_format as fmt

WAIT_S = 20.0  # upper bound of every wait; the tests normally take milliseconds per wait
SEQS = [*range(20), *range(25, 55)]  # 50 frames with a gap of 5
DESCRIPTION = {
    "source": "genicam",
    "shape": [24, 32],
    "dtype": "uint16",
    "n_frames": None,
    "frame_rate_hz": 50.0,
    "frame_interval_s": 0.02,
    "pixel_size_um": 0.108,
    "camera": {"offset_adu": 100.0, "gain_adu_per_e": 2.2, "read_noise_e": 1.4},
    "device": {"vendor": "Acme", "model": "µCam 3", "serial": "A-17", "pixel_format": "Mono16"},
    "live": True,
}
needs_posix = pytest.mark.skipif(os.name != "posix", reason="resource limits and SIGKILL are POSIX")


def _description(dtype="uint16", shape=(24, 32)):
    return dict(DESCRIPTION, dtype=np.dtype(dtype).name, shape=list(shape))


def _frames(dtype, n=50, shape=(24, 32), seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.normal(100.0, 30.0, (n, *shape))).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (n, *shape), endpoint=True).astype(dtype)


def _wait_until(condition, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {WAIT_S} s waiting for {what}"
        time.sleep(0.005)


def _run_child(script, *args, timeout=WAIT_S):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_round_trip_replays_seqs_timestamps_pixels_metadata_and_description(tmp_path, dtype):
    path = tmp_path / "run.raw.ome.tif"
    frames = _frames(dtype)
    t0 = 1_764_000_000.123456
    timestamps = [t0 + 0.02 * seq + 1e-7 * (seq % 3) for seq in SEQS]
    with FrameRecorder(path, description=_description(dtype)) as recorder:
        assert path.exists()  # created at once
        for seq, timestamp, frame in zip(SEQS, timestamps, frames):
            assert recorder.record(seq, timestamp, frame, {"camera_frame_id": 1000 + seq, "exposure_s": 0.015})
    counters = recorder.close()  # idempotent: the same counters again
    assert counters == {
        "frames_recorded": 50,
        "dropped_queue_full": 0,
        "dropped_write_error": 0,
        "refused": 0,
        "write_error": "",
        "path": str(path),
        "bytes_written": path.stat().st_size,
    }

    with open_movie(path) as source:
        description = source.describe()
        replayed = list(source)
    assert [f.seq for f in replayed] == SEQS  # the gap stays a gap
    assert [f.timestamp for f in replayed] == timestamps  # exactly: JSON keeps every float64
    np.testing.assert_array_equal(np.stack([f.data for f in replayed]), frames)
    assert all(f.data.dtype == np.dtype(dtype) for f in replayed)
    assert [f.metadata for f in replayed] == [{"camera_frame_id": 1000 + s, "exposure_s": 0.015} for s in SEQS]
    assert description["source"] == "recording of genicam" and description["recorded_source"] == "genicam"
    assert description["live"] is False and description["n_frames"] == 50 and description["path"] == str(path)
    assert description["shape"] == [24, 32] and description["dtype"] == np.dtype(dtype).name
    for key in ("frame_rate_hz", "frame_interval_s", "pixel_size_um", "camera", "device"):
        assert description[key] == DESCRIPTION[key], key
    assert description["recording"]["recording_version"] == fmt.RECORDING_VERSION
    assert description["recording"]["finalized"] is True

    # what Fiji (Bio-Formats) and napari see: one OME BigTIFF series T x Y x X, calibrated
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.is_bigtiff
        series = tif.series[0]
        assert series.shape == (50, 24, 32) and series.axes == "TYX"
        np.testing.assert_array_equal(series.asarray(), frames)
        ome = ElementTree.fromstring(tif.ome_metadata)
    pixels = next(e for e in ome.iter() if e.tag.endswith("Pixels"))
    assert float(pixels.get("PhysicalSizeX")) == float(pixels.get("PhysicalSizeY")) == 0.108
    assert float(pixels.get("TimeIncrement")) == 0.02 and pixels.get("TimeIncrementUnit") == "s"
    planes = [e for e in pixels if e.tag.endswith("Plane")]
    assert [int(p.get("TheT")) for p in planes] == list(range(50))
    np.testing.assert_allclose([float(p.get("DeltaT")) for p in planes], np.subtract(timestamps, timestamps[0]))


def test_every_recording_key_is_documented(tmp_path):
    path = tmp_path / "keys.ome.tif"
    with FrameRecorder(path, description=_description()) as recorder:
        recorder.record(3, 1.0, _frames("uint16", n=1)[0], {"camera_frame_id": 3})
    with tifffile.TiffFile(path) as tif:
        text = next(e.text for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.get("K") == fmt.RECORDING_KEY)
    facts = json.loads(text)[fmt.RECORDING_KEY]
    with open_movie(path) as source:
        replay = source.describe()
    written = {*facts, *facts["not_recorded"], *replay["recording"], *(set(replay) - set(DESCRIPTION))}
    docs = (Path(__file__).parents[2] / "docs" / "recording_format.md").read_text(encoding="utf-8")
    undocumented = sorted(key for key in written if f"`{key}`" not in docs)
    assert not undocumented, f"describe these keys in docs/recording_format.md: {undocumented}"
    assert f"(recording_version {fmt.RECORDING_VERSION})" in docs.splitlines()[0]


def test_an_ordinary_ome_tiff_is_not_taken_for_a_recording(tmp_path):
    path = tmp_path / "plain.ome.tif"
    stack = _frames("uint16", n=4)
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "TYX", "MapAnnotation": {"other": "value"}})
    with open_movie(path) as source:
        description = source.describe()
        assert [f.seq for f in source] == [0, 1, 2, 3]
    assert description["source"] == "tiff_stack" and "recording" not in description


def test_a_big_endian_frame_of_the_right_type_is_recorded_as_its_values(tmp_path):
    path = tmp_path / "be.ome.tif"
    frame = _frames("uint16", n=1)[0]
    with FrameRecorder(path, description=_description()) as recorder:
        assert recorder.record(7, 1.5, frame.astype(">u2"), {})
    with open_movie(path) as source:
        (replayed,) = list(source)
    assert replayed.seq == 7 and replayed.timestamp == 1.5
    np.testing.assert_array_equal(replayed.data, frame)


# ------------------------------------------------------------------ a disk that cannot keep up
def test_a_slow_disk_drops_and_counts_frames_without_blocking_the_caller(tmp_path, caplog):
    path = tmp_path / "slow.ome.tif"
    frames = _frames("uint16", n=15)
    frame_bytes = frames[0].nbytes
    writer_entered, disk_free = threading.Event(), threading.Event()

    def slow_disk(seq):
        writer_entered.set()
        disk_free.wait(WAIT_S)

    clock = [0.0]
    recorder = FrameRecorder(
        path,
        description=_description(),
        queue_bytes=3 * frame_bytes,
        before_write=slow_disk,
        clock=lambda: clock[0],
    )
    accepted: list[bool] = []

    def camera(seqs):
        for seq in seqs:
            accepted.append(recorder.record(seq, float(seq), frames[seq], {"id": seq}))

    with caplog.at_level(logging.WARNING, logger="plstream.acquire_adapters.files.recorder"):
        # the writer holds frame 0 and never finishes it while the camera delivers frames 0..9
        feeder = threading.Thread(target=camera, args=(range(10),))
        feeder.start()
        feeder.join(WAIT_S)
        assert not feeder.is_alive(), "record() waited for the held writer"
        assert writer_entered.wait(WAIT_S), "the writer never took the first frame"
        assert accepted == [True] * 3 + [False] * 7  # the queue holds 3 frames (the one being written included)
        assert recorder.counters["dropped_queue_full"] == 7 and recorder.counters["frames_recorded"] == 0

        disk_free.set()
        _wait_until(lambda: recorder.counters["frames_recorded"] == 3, "the queued frames to be written")
        for seq in range(10, 15):  # the disk keeps up again
            camera([seq])
            written = seq - 6  # frames 0..2, then 10..seq
            _wait_until(lambda n=written: recorder.counters["frames_recorded"] == n, f"frame {seq} to be written")
        counters = recorder.close()

    assert accepted[10:] == [True] * 5
    assert counters["frames_recorded"] == 8 and counters["dropped_queue_full"] == 7 and counters["refused"] == 0
    slow = [r for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(slow) == 1, "the clock did not move: one log line for the whole burst"
    assert str(path) in slow[0].getMessage()
    with open_movie(path) as source:
        replayed = list(source)
    assert [f.seq for f in replayed] == [0, 1, 2, *range(10, 15)]
    assert [f.metadata["id"] for f in replayed] == [0, 1, 2, *range(10, 15)]
    np.testing.assert_array_equal(np.stack([f.data for f in replayed]), frames[[0, 1, 2, *range(10, 15)]])
    with tifffile.TiffFile(path) as tif:
        meta = json.loads(
            next(e.text for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.get("K") == fmt.RECORDING_KEY)
        )[fmt.RECORDING_KEY]
    assert meta["seq_runs"] == [[0, 2], [10, 14]]
    assert meta["not_recorded"] == {"dropped_queue_full": 7, "dropped_write_error": 0, "refused": 0, "write_error": ""}


# ------------------------------------------------------------------ refused frames, bad paths, bad descriptions
def test_frames_of_the_wrong_shape_or_type_are_refused_counted_and_not_written(tmp_path, caplog):
    path = tmp_path / "refused.ome.tif"
    good = _frames("uint16", n=2)
    with caplog.at_level(logging.WARNING, logger="plstream.acquire_adapters.files.recorder"):
        with FrameRecorder(path, description=_description()) as recorder:
            assert recorder.record(0, 0.0, good[0], {})
            assert not recorder.record(1, 0.1, np.zeros((24, 33), np.uint16), {})  # shape
            assert not recorder.record(2, 0.2, good[1].astype(np.float32), {})  # dtype
            assert not recorder.record(3, 0.3, np.zeros((24, 32, 3), np.uint16), {})  # colour
            assert not recorder.record(4.0, 0.4, good[1], {})  # seq not an integer
            assert not recorder.record(4, float("nan"), good[1], {})  # no time
            assert not recorder.record(5, 0.5, good[1], {(1, 2): "a key JSON cannot hold"})
            assert recorder.record(6, 0.6, good[1], {})
            assert recorder.counters["refused"] == 6
        counters = recorder.close()
        assert not recorder.record(7, 0.7, good[1], {}), "a closed recorder takes nothing"
    assert counters["frames_recorded"] == 2 and counters["refused"] == 6
    assert recorder.counters["refused"] == 7
    assert "frame seq 1 not recorded: it is (24, 33) uint16, the recording holds (24, 32) uint16" in caplog.text
    with open_movie(path) as source:
        assert [f.seq for f in source] == [0, 6]


def test_an_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "taken.ome.tif"
    path.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists.*choose a new path") as error:
        FrameRecorder(path, description=_description())
    assert error.value.path == str(path) and path.read_bytes() == b"precious"


def test_a_missing_or_unwritable_folder_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="folder .* does not exist; create it"):
        FrameRecorder(tmp_path / "no-such-folder" / "r.ome.tif", description=_description())
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere
        return
    with pytest.raises(InputError, match="no permission to write in .*choose a writable folder"):
        FrameRecorder(locked / "r.ome.tif", description=_description())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shape": [24]}, "'shape' must be \\[rows, cols\\]"),
        ({"dtype": "int64"}, "cannot record int64 frames"),
        ({"dtype": "no such type"}, "'dtype' 'no such type' is not a numpy type"),
    ],
)
def test_an_unusable_description_is_refused_before_the_file_is_made(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        FrameRecorder(tmp_path / "r.ome.tif", description=dict(DESCRIPTION, **change))
    assert not (tmp_path / "r.ome.tif").exists()


def test_a_recording_of_a_newer_version_is_refused_with_what_to_do():
    facts = {"recording_version": fmt.RECORDING_VERSION + 1, "finalized": False, "source": {}}
    description = fmt.placeholder_description(facts)
    with pytest.raises(InputError, match="recording_version 2; this plstream reads version 1 .*update plstream"):
        fmt.parse_recording("r.ome.tif", description)


# ------------------------------------------------------------------ write errors and killed recorders (child processes)
_RECORD_UNDER_A_FILE_SIZE_LIMIT = """
    import json, logging, resource, signal, sys
    import numpy as np
    from plstream.acquire_adapters import FrameRecorder
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    path, side, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    recorder = FrameRecorder(path, description={"source": "genicam", "shape": [side, side], "dtype": "uint16"})
    for seq in range(40):
        recorder.record(seq, 100.0 + seq, np.full((side, side), seq, np.uint16), {"id": seq})
    print(json.dumps(recorder.close()))
    print("analysis went on", flush=True)
"""


@needs_posix
@pytest.mark.parametrize(
    ("side", "limit", "finalized"),
    [(64, 100_000, True), (8, 3_000, False)],  # the OME-XML fits in what the limit leaves, or it does not
    ids=["finalized", "not-finalized"],
)
def test_a_write_error_stops_the_recording_cleanly_and_keeps_the_frames_written(
    tmp_path, caplog, side, limit, finalized
):
    path = tmp_path / "full.ome.tif"
    child = _run_child(_RECORD_UNDER_A_FILE_SIZE_LIMIT, path, side, limit)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[-1] == "analysis went on"
    counters = json.loads(lines[-2])
    written = counters["frames_recorded"]
    assert 0 < written < 40
    assert counters["dropped_write_error"] == 40 - written and counters["dropped_queue_full"] == 0
    assert f"frame seq {written}" in counters["write_error"] and "File too large" in counters["write_error"]
    stopped = [line for line in child.stderr.splitlines() if "recording stopped" in line]
    assert len(stopped) == 1 and str(path) in stopped[0] and f"frame seq {written}" in stopped[0], child.stderr
    assert path.stat().st_size <= limit

    with caplog.at_level(logging.WARNING), open_movie(path) as source:
        replayed = list(source)
    assert [f.seq for f in replayed] == list(range(written))
    assert [int(f.data[0, 0]) for f in replayed] == list(range(written))
    if finalized:
        assert [f.metadata for f in replayed] == [{"id": seq} for seq in range(written)]
        assert not caplog.records
    else:
        assert "could not be finalized" in child.stderr
        assert "not finalized" in caplog.text


_RECORD_UNTIL_KILLED = """
    import sys, time
    import numpy as np
    from plstream.acquire_adapters import FrameRecorder
    recorder = FrameRecorder(sys.argv[1], description={
        "source": "genicam", "shape": [32, 48], "dtype": "uint16", "frame_rate_hz": 100.0,
        "camera": {"offset_adu": 100.0, "gain_adu_per_e": 2.2, "read_noise_e": 1.4}})
    seq = 0
    while True:
        recorder.record(seq, time.time(), np.full((32, 48), seq, np.uint16), {"id": seq})
        seq += 1
        print(recorder.counters["frames_recorded"], flush=True)
        time.sleep(0.002)
"""


@needs_posix
def test_a_killed_recorder_leaves_a_plain_tiff_stack_that_replays_with_a_warning(tmp_path, caplog):
    path = tmp_path / "killed.ome.tif"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_RECORD_UNTIL_KILLED), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    recorded = 0
    try:
        deadline = time.monotonic() + WAIT_S
        while recorded < 10:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the child recorded fewer than 10 frames in time"
            if select.select([child.stdout], [], [], remaining)[0]:
                recorded = int(child.stdout.readline() or 0)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=WAIT_S)

    with tifffile.TiffFile(path) as tif:
        assert not tif.is_ome and tif.is_bigtiff
        n = len(tif.pages)
        assert n >= recorded  # a frame may have been written after the last count was printed
        assert tif.series[0].shape == (n, 32, 48)
        np.testing.assert_array_equal(tif.series[0].asarray()[:, 0, 0], np.arange(n))

    with caplog.at_level(logging.WARNING, logger="plstream.acquire_adapters.files.tiff_stack"):
        with open_movie(path) as source:
            description = source.describe()
            replayed = list(source)
    assert len(replayed) == n and [f.seq for f in replayed] == list(range(n))
    assert [int(f.data[0, 0]) for f in replayed] == list(range(n))
    assert all(f.metadata == {} for f in replayed)
    (warning,) = caplog.records
    assert "not finalized" in warning.getMessage() and "metadata were lost" in warning.getMessage()
    assert str(path) in warning.getMessage()
    # the source's description was written when the recording started, so it survives
    assert description["source"] == "recording of genicam" and description["live"] is False
    assert description["camera"] == {"offset_adu": 100.0, "gain_adu_per_e": 2.2, "read_noise_e": 1.4}
    assert description["frame_rate_hz"] == 100.0 and description["recording"]["finalized"] is False
