"""Micro-Manager cameras: MMCore's real sequence acquisition (UniMMCore) filming the simulated movie.

No mock of MMCore: frames go through UniMMCore's circular buffer and image
tags from :class:`SimulatedMMCamera`, and each frame is compared with
``SimulatedCamera.render_frame(seq)`` of the same parameters and seed. The
C++ path (Micro-Manager's demo configuration) runs where device adapters are
installed. Every wait is bounded (a watchdog stops the camera).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from plstream.acquire_adapters import CameraError, FrameSource, InputError, SimulatedCamera, SimulationParams
from plstream.acquire_adapters.cameras._mm_images import FrameDefaults, ImageNumbering, frame_metadata, frame_time
from plstream.acquire_adapters.cameras.micromanager import MicroManagerCamera


def _missing_micromanager_support() -> str:
    """Why the tests through pymmcore-plus cannot run here ("" when they can)."""
    if importlib.util.find_spec("pymmcore_plus") is None:
        return "pymmcore-plus is not installed (pip install 'plstream[micromanager]')"
    try:
        importlib.import_module("plstream.acquire_adapters.cameras.mm_simulated")
    except ImportError as exc:
        return str(exc)
    return ""


MISSING = _missing_micromanager_support()
needs_pymmcore_plus = pytest.mark.skipif(bool(MISSING), reason=MISSING)

SEED = 5
# 200 frames/s; 64 x 80 px (not square, so a transposition shows)
PARAMS = SimulationParams(shape=(64, 80), n_frames=400, n_emitters=6, frame_rate_hz=200.0)
WAIT_S = 10.0  # bound on every wait for frames


@pytest.fixture(scope="module")
def reference():
    return SimulatedCamera(PARAMS, seed=SEED)


def _core(params=PARAMS, seed=SEED):
    """A UniMMCore whose camera "SimCam" is a SimulatedMMCamera; returns (core, device)."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    from plstream.acquire_adapters.cameras.mm_simulated import SimulatedMMCamera

    core = UniMMCore()
    device = SimulatedMMCamera(params, seed)
    core.loadPyDevice("SimCam", device)
    core.initializeDevice("SimCam")
    core.setCameraDevice("SimCam")
    return core, device


@pytest.fixture
def sim_core():
    """``simulated_core(PARAMS, SEED)``: a UniMMCore whose camera "SimCam" films the reference movie."""
    from plstream.acquire_adapters.cameras.mm_simulated import simulated_core

    core = simulated_core(PARAMS, seed=SEED)
    yield core
    core.unloadAllDevices()


def _take(camera, n, timeout_s=WAIT_S):
    """The first ``n`` frames of a fresh iteration (fewer if ``timeout_s`` passes: a watchdog stops the camera)."""
    watchdog = threading.Timer(timeout_s, camera.stop)
    watchdog.start()
    frames = []
    iterator = iter(camera)
    try:
        for frame in iterator:
            frames.append(frame)
            if len(frames) == n:
                break
    finally:
        iterator.close()
        watchdog.cancel()
    return frames


def _wait_until(condition, timeout_s=WAIT_S):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ------------------------------------------------------------ without MMCore
def test_without_pymmcore_plus_opening_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymmcore_plus", None)  # an import of it now fails
    with pytest.raises(InputError, match=r"pip install 'plstream\[micromanager\]'") as info:
        MicroManagerCamera(config="MMConfig.cfg")
    assert info.value.path == "micromanager" and "\n" not in str(info.value)


def test_image_numbers_become_seqs_and_gaps_are_counted(caplog):
    numbering = ImageNumbering(capacity=32, name="cam")
    with caplog.at_level(logging.WARNING, logger="plstream.acquire_adapters.cameras._mm_images"):
        seqs = [numbering.seq(n) for n in (7, 8, 9, 20, 21, 60)]
    assert seqs == [0, 1, 2, 13, 14, 53]
    assert (numbering.lost, numbering.gaps) == (10 + 38, 2)
    assert sum("images lost" in r.getMessage() for r in caplog.records) == 2


def test_an_image_number_that_restarts_counts_at_least_the_cleared_buffer(caplog):
    """MMCore before 12.5 restarted ImageNumber at 0 when it cleared its full buffer."""
    numbering = ImageNumbering(capacity=32, name="cam")
    with caplog.at_level(logging.WARNING, logger="plstream.acquire_adapters.cameras._mm_images"):
        seqs = [numbering.seq(n) for n in (0, 1, 2, 0, 1, 3)]
    # after seq 2, the 32 cleared images are seqs 3..34; the new image 0 is seq 35
    assert seqs == [0, 1, 2, 35, 36, 38]
    assert numbering.lost == 32 + 1
    assert any("lower bound" in r.getMessage() for r in caplog.records)


def test_images_without_numbers_are_counted_in_order():
    numbering = ImageNumbering(capacity=4, name="cam")
    assert [numbering.seq(None) for _ in range(3)] == [0, 1, 2] and numbering.lost == 0


def test_frame_time_reads_the_core_time_and_refuses_implausible_ones():
    tags = {"TimeReceivedByCore": "2026-03-04 05:06:07.250000"}
    epoch = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1)) + 0.25  # local time, as MMCore writes it
    assert frame_time(tags, epoch - 0.5, epoch + 0.5) == pytest.approx(epoch, abs=1e-6)
    assert frame_time(tags, epoch + 60, epoch + 61) is None  # before the acquisition started
    assert frame_time({"TimeReceivedByCore": "yesterday"}, 0, 1e10) is None
    assert frame_time({}, 0, 1e10) is None


def test_frame_metadata_prefers_the_image_tags_over_the_start_state():
    defaults = FrameDefaults(camera="Cam", exposure_ms=10.0, binning=2, roi_px=(4, 6, 32, 16))
    tagged = {"ElapsedTime-ms": "12.5", "Exposure-ms": "9.5", "Camera": "Cam", "Binning": "2", "ROI-X-start": "8"}
    tagged["ROI-Y-start"] = "2"
    assert frame_metadata(3, tagged, defaults) == {
        "image_number": 3,
        "elapsed_ms": 12.5,
        "exposure_ms": 9.5,
        "camera": "Cam",
        "roi_px": [8, 2, 32, 16],
        "binning": 2,
    }
    assert frame_metadata(0, {}, defaults) == {
        "image_number": 0,
        "exposure_ms": 10.0,
        "camera": "Cam",
        "roi_px": [4, 6, 32, 16],
        "binning": 2,
    }


# ------------------------------------------------------- through UniMMCore
@needs_pymmcore_plus
def test_describe_is_final_when_opened(sim_core):
    core = sim_core
    with MicroManagerCamera(core=core, buffer_mb=16) as camera:
        assert isinstance(camera, FrameSource)
        described = camera.describe()
    assert described == {
        "source": "micromanager",
        "shape": [64, 80],
        "dtype": "uint16",
        "n_frames": None,
        "live": True,
        "frame_interval_s": pytest.approx(0.005),
        "frame_rate_hz": pytest.approx(200.0),
        "frame_interval_from": "ActualInterval-ms",
        "camera": {"offset_adu": 100.0, "gain_adu_per_e": 2.0, "read_noise_e": 1.5},
        "device": {
            "label": "SimCam",
            "library": "plstream.acquire_adapters.cameras.mm_simulated",
            "name": "SimulatedMMCamera",
            "description": "plstream simulated movie of blinking emitters (ground truth available)",
            "pixel_type": "GRAY16",
            "bit_depth": 16,
            "binning": 1,
            "exposure_ms": pytest.approx(5.0),
            "roi_px": [0, 0, 80, 64],
        },
        "buffer_frames": 16 * 2**20 // (64 * 80 * 2),
    }


@needs_pymmcore_plus
def test_frames_are_the_simulated_movie_in_order_with_their_metadata(sim_core, reference):
    core = sim_core
    with MicroManagerCamera(core=core) as camera:
        started = time.time()
        frames = _take(camera, 100)
        finished = time.time()
        assert camera.frames_lost == 0
    assert [f.seq for f in frames] == list(range(100))
    for frame in frames:
        assert frame.data.dtype == np.uint16 and frame.data.flags.c_contiguous
        np.testing.assert_array_equal(frame.data, reference.render_frame(frame.seq))
    times = [f.timestamp for f in frames]
    assert started - 1 <= times[0] and times == sorted(times) and times[-1] <= finished
    assert frames[7].metadata == {
        "image_number": 7,
        "elapsed_ms": frames[7].metadata["elapsed_ms"],
        "exposure_ms": 5.0,
        "camera": "SimCam",
        "roi_px": [0, 0, 80, 64],
        "binning": 1,
    }
    elapsed = [f.metadata["elapsed_ms"] for f in frames]
    assert elapsed == sorted(elapsed)
    assert not core.isSequenceRunning()


@needs_pymmcore_plus
def test_exposure_binning_and_roi_are_applied(sim_core, reference):
    core = sim_core
    roi = (8, 16, 40, 24)  # x, y, width, height
    with MicroManagerCamera(core=core, exposure_ms=4.0, binning=1, roi_px=roi) as camera:
        described = camera.describe()
        frames = _take(camera, 12)
    assert described["shape"] == [24, 40] and described["frame_interval_s"] == pytest.approx(0.004)
    assert described["device"]["roi_px"] == list(roi) and described["device"]["exposure_ms"] == pytest.approx(4.0)
    assert [f.seq for f in frames] == list(range(12))
    for frame in frames:
        np.testing.assert_array_equal(frame.data, reference.render_frame(frame.seq)[16:40, 8:48])
        assert frame.metadata["roi_px"] == list(roi) and frame.metadata["exposure_ms"] == 4.0


@needs_pymmcore_plus
@pytest.mark.parametrize(
    ("setting", "value", "names"),
    [
        ("binning", 2, "renders unbinned pixels"),
        ("roi_px", (60, 0, 40, 40), "must lie within 80x64"),
        ("exposure_ms", 20_000.0, "0.01-10000"),
    ],
)
def test_a_setting_the_camera_refuses_names_the_setting(sim_core, setting, value, names):
    core = sim_core
    with pytest.raises(CameraError, match=f"refused {setting}.*{names}.*camera.micromanager.{setting}"):
        MicroManagerCamera(core=core, **{setting: value})


@needs_pymmcore_plus
def test_a_full_buffer_loses_images_and_each_lost_image_is_a_missing_seq(reference, caplog):
    """1 MB holds 32 frames of 128 x 128 uint16; the consumer stops reading while the camera goes on."""
    params = dataclasses.replace(PARAMS, shape=(128, 128))
    core, device = _core(params)
    try:
        with MicroManagerCamera(core=core, buffer_mb=1) as camera:
            capacity = camera.describe()["buffer_frames"]
            assert capacity == 32
            frames = []
            iterator = iter(camera)
            watchdog = threading.Timer(WAIT_S, camera.stop)
            watchdog.start()
            try:
                frames += [next(iterator) for _ in range(5)]
                # read nothing while the camera delivers the buffer's capacity and 40 more
                assert _wait_until(lambda: device.images_sent >= 5 + capacity + 40)
                for frame in iterator:
                    frames.append(frame)
                    if len(frames) == 5 + capacity + 20:
                        break
            finally:
                iterator.close()  # stops the acquisition
                watchdog.cancel()
            sent, remaining = device.images_sent, core.getRemainingImageCount()
            lost = camera.frames_lost
        assert core.isBufferOverflowed()
    finally:
        core.unloadAllDevices()
    seqs = [f.seq for f in frames]
    assert len(frames) == 5 + capacity + 20 and seqs == sorted(set(seqs))
    assert lost >= 40 and lost == seqs[-1] + 1 - len(frames)
    # what MMCore discarded: images the camera sent that were neither read nor left in the buffer at the end
    assert lost == sent - len(frames) - remaining
    assert any("images lost in MMCore's circular buffer" in r.getMessage() for r in caplog.records)
    big = SimulatedCamera(params, seed=SEED)
    for frame in frames:  # the seq says which frame it is, also after the gap
        np.testing.assert_array_equal(frame.data, big.render_frame(frame.seq))
        assert frame.metadata["image_number"] == frame.seq


def _consume_in_thread(camera):
    """Iterate ``camera`` in a thread; returns (thread, frames, errors, first frame arrived event)."""
    frames, errors, arrived = [], [], threading.Event()

    def consume():
        try:
            for frame in camera:
                frames.append(frame)
                arrived.set()
        except (CameraError, RuntimeError, ValueError) as exc:  # reported by the test
            errors.append(exc)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    return consumer, frames, errors, arrived


# UniMMCore.isSequenceRunning() is not polled from the test thread while the consumer starts the
# sequence: called between the acquisition thread's creation and its start(), it forgets that thread.
@needs_pymmcore_plus
def test_stop_from_another_thread_ends_an_iteration_waiting_for_images(sim_core):
    core = sim_core
    with MicroManagerCamera(core=core, exposure_ms=300.0) as camera:
        consumer, frames, errors, arrived = _consume_in_thread(camera)
        assert arrived.wait(WAIT_S)  # frame 0 came; the next one is 300 ms away
        camera.stop()
        consumer.join(WAIT_S)
        assert not consumer.is_alive() and not errors
        assert not core.isSequenceRunning()
        assert [f.seq for f in frames] == list(range(len(frames)))


@needs_pymmcore_plus
def test_close_from_another_thread_ends_the_iteration_and_the_camera(sim_core):
    core = sim_core
    camera = MicroManagerCamera(core=core, exposure_ms=300.0)
    consumer, _, errors, arrived = _consume_in_thread(camera)
    assert arrived.wait(WAIT_S)
    camera.close()
    consumer.join(WAIT_S)
    assert not consumer.is_alive() and not errors and not core.isSequenceRunning()
    camera.close()  # twice is fine
    assert "SimCam" in core.getLoadedDevices()  # a core given without a config keeps its devices
    with pytest.raises(ValueError, match="closed"):
        next(iter(camera))


@needs_pymmcore_plus
def test_a_camera_that_stops_delivering_ends_the_iteration_with_the_frame_count():
    core, _ = _core(dataclasses.replace(PARAMS, n_frames=12))  # the movie ends: the camera stops after 12 images
    try:
        with MicroManagerCamera(core=core) as camera, pytest.raises(CameraError, match="after 12 frames"):
            _take(camera, 100)
    finally:
        core.unloadAllDevices()


@needs_pymmcore_plus
def test_an_unloaded_camera_ends_the_iteration_with_the_frame_count(sim_core):
    core = sim_core
    with MicroManagerCamera(core=core) as camera:
        received = 0
        with pytest.raises(CameraError, match="unloaded after 5 frames"):
            for _ in camera:
                received += 1
                if received == 5:
                    core.unloadDevice("SimCam")
        camera.close()


@needs_pymmcore_plus
def test_a_configuration_file_can_load_the_simulated_camera(tmp_path):
    config = tmp_path / "MMConfig_plstream.cfg"
    config.write_text(
        "# the simulated camera, for UniMMCore\n"
        "#py pyDevice,SimCam,plstream.acquire_adapters.cameras.mm_simulated,SimulatedMMCamera\n"
        "#py Property,SimCam,Seed,3\n"
        "#py Property,SimCam,Frames,40\n"
        "Property,Core,Initialize,1\n"
        "#py Property,Core,Camera,SimCam\n"
    )
    with MicroManagerCamera(config=str(config), exposure_ms=5.0) as camera:
        core = camera.core
        assert type(core).__name__ == "UniMMCore" and camera.label == "SimCam"
        frames = _take(camera, 10)
    assert "SimCam" not in core.getLoadedDevices()  # close() unloads what the configuration loaded
    movie = SimulatedCamera(dataclasses.replace(SimulationParams(), n_frames=40), seed=3)
    assert [f.seq for f in frames] == list(range(10))
    for frame in frames:
        np.testing.assert_array_equal(frame.data, movie.render_frame(frame.seq))


# ------------------------------------------------------------------- errors
@needs_pymmcore_plus
def test_a_missing_configuration_file_is_named(tmp_path):
    missing = tmp_path / "MMConfig.cfg"
    with pytest.raises(CameraError, match="no such configuration file") as info:
        MicroManagerCamera(config=str(missing))
    assert info.value.path == str(missing)


@needs_pymmcore_plus
def test_no_configuration_and_no_core_says_what_to_set():
    with pytest.raises(CameraError, match="set camera.micromanager.config"):
        MicroManagerCamera()


@needs_pymmcore_plus
def test_an_unknown_camera_label_lists_the_cameras_loaded(sim_core):
    core = sim_core
    with pytest.raises(CameraError, match="no camera labelled 'Andor'.*one of: SimCam"):
        MicroManagerCamera(core=core, camera="Andor")


@needs_pymmcore_plus
def test_a_missing_adapter_folder_is_named(tmp_path):
    config = tmp_path / "MMConfig.cfg"
    config.write_text("Device,Camera,DemoCamera,DCam\n")
    with pytest.raises(CameraError, match="no such folder.*adapter_path"):
        MicroManagerCamera(config=str(config), adapter_path=str(tmp_path / "Micro-Manager"))


def _micromanager_folder() -> str | None:
    if MISSING:
        return None
    from pymmcore_plus import find_micromanager

    return find_micromanager()


@needs_pymmcore_plus
def test_a_configuration_needing_adapters_says_how_to_install_them(tmp_path):
    if _micromanager_folder():
        pytest.skip("Micro-Manager's device adapters are installed here, so they are found")
    config = tmp_path / "MMConfig.cfg"
    config.write_text("Device,Camera,DemoCamera,DCam\nProperty,Core,Initialize,1\n")
    with pytest.raises(CameraError, match="no Micro-Manager device adapters found.*mmcore install"):
        MicroManagerCamera(config=str(config))


# ------------------------------------------------- the C++ demo configuration
@needs_pymmcore_plus
def test_micromanager_demo_configuration_with_the_cpp_demo_camera():
    folder = _micromanager_folder()
    demo = Path(folder or ".") / "MMConfig_demo.cfg"
    if not folder or not demo.is_file():
        pytest.skip(
            "Micro-Manager's device adapters are not installed (pymmcore_plus.find_micromanager() finds none; "
            "`mmcore install` downloads them)"
        )
    roi = (16, 8, 64, 48)
    with MicroManagerCamera(
        config=str(demo), camera="Camera", exposure_ms=5.0, binning=2, roi_px=roi, buffer_mb=64
    ) as camera:
        described = camera.describe()
        frames = _take(camera, 30)
    assert described["shape"] == [48, 64] and described["n_frames"] is None and described["live"]
    assert described["device"]["library"] == "DemoCamera" and described["device"]["binning"] == 2
    assert "camera" not in described  # the demo camera states no photon model
    assert [f.seq for f in frames] == list(range(30))
    for frame in frames:
        assert frame.data.shape == (48, 64) and frame.data.dtype == np.dtype(described["dtype"])
        assert frame.metadata["camera"] == "Camera" and frame.metadata["binning"] == 2
        assert frame.metadata["roi_px"] == list(roi)
    times = [f.timestamp for f in frames]
    assert times == sorted(times)
