"""GenICam cameras through the real harvesters stack and Viky, the software camera shipped with genicam.

What Viky is (measured): a GenTL producer with 3 cameras, serial numbers
"0", "1", "2" (vendor "Machine Vision Games Ltd.", model "Viky", tl_type
"Custom"); PixelFormat RGBa8 (the default) or Mono8; Width/Height 100..800;
AcquisitionFrameRate 1..200 Hz (20 by default, step 1); a BouncingBallSize
node (1..40) and a FancyBallOperation command; no OffsetX/OffsetY, no
ExposureTime, no buffer timestamps; frame IDs from 1 at every start; a
PayloadSize of 10 MB whatever the image size (so these tests use few buffers).
When all buffers are full it keeps them and drops the newer frames (their
frame IDs are skipped).

No mocks; every wait is bounded and no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

pytest.importorskip("harvesters.core", reason="GenICam support not installed: pip install 'plstream[genicam]'")
genicam = pytest.importorskip("genicam", reason="GenICam support not installed: pip install 'plstream[genicam]'")

from plstream.acquire_adapters import CameraError, FrameSource, InputError  # noqa: E402
from plstream.acquire_adapters.cameras.genicam import GenicamCamera  # noqa: E402

VIKY = Path(genicam.__file__).parent / "viky.cti"
if not VIKY.is_file():
    pytest.skip(f"this genicam build ships no Viky producer ({VIKY})", allow_module_level=True)


def open_viky(**settings):
    """Viky camera "1" with few buffers, unless the test says otherwise."""
    settings.setdefault("cti", str(VIKY))
    settings.setdefault("device", "1")
    settings.setdefault("buffers", 8)
    return GenicamCamera(**settings)


def take(camera, n):
    """The next ``n`` frames of a fresh iteration (acquisition stopped afterwards)."""
    frames = []
    iterator = iter(camera)
    try:
        for frame in iterator:
            frames.append(frame)
            if len(frames) == n:
                break
    finally:
        iterator.close()
    return frames


def wait_until(condition, timeout_s=10.0):
    """Poll ``condition`` until it is true or ``timeout_s`` passed; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


class Consumer(threading.Thread):
    """Iterates a camera in a thread, keeping the frames and the exception that ended it."""

    def __init__(self, camera):
        super().__init__(daemon=True)
        self.camera = camera
        self.frames = []
        self.error = None

    def run(self):
        try:
            for frame in self.camera:
                self.frames.append(frame)
        except CameraError as exc:  # anything else fails the test loudly from this thread
            self.error = exc


def test_acquires_frames_numbered_by_camera_frame_id():
    before = time.time()
    buffers = 32
    with open_viky(frame_rate_hz=100, roi_px=(0, 0, 320, 240), buffers=buffers) as camera:
        assert isinstance(camera, FrameSource)
        info = camera.describe()
        frames = take(camera, 60)
        again = take(camera, 3)
    after = time.time()
    assert msgpack.unpackb(msgpack.packb(info)) == info
    assert {k: info[k] for k in ("source", "shape", "dtype", "n_frames", "live")} == {
        "source": "genicam",
        "shape": [240, 320],
        "dtype": "uint8",
        "n_frames": None,
        "live": True,
    }
    assert info["frame_rate_hz"] == 100.0
    assert info["frame_interval_s"] == pytest.approx(0.01)
    device = info["device"]
    assert device["vendor"] == "Machine Vision Games Ltd."
    assert (device["model"], device["serial"], device["id"]) == ("Viky", "1", "VikyTL_DEV_green")
    assert (device["pixel_format"], device["tl_type"]) == ("Mono8", "Custom")
    assert all(isinstance(v, (str, int, float)) for v in device.values())

    for frame in frames:
        assert frame.data.shape == (240, 320) and frame.data.dtype == np.uint8
        assert frame.data.flags.c_contiguous and frame.data.flags.owndata
        assert before <= frame.timestamp <= after
        # Viky numbers frames from 1 and has no buffer timestamps: only the frame ID comes with each frame
        assert frame.metadata == {"camera_frame_id": frame.seq + 1}
        assert msgpack.unpackb(msgpack.packb(frame.metadata)) == frame.metadata
    seqs = [f.seq for f in frames]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    # The first frames fill the empty buffers, so none of them can be lost however slow this machine is;
    # later ones are lost only when the consumer lags by more than `buffers` frames (then seq shows it).
    assert seqs[:buffers] == list(range(buffers))
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(frames))
    assert not all(np.array_equal(frames[0].data, f.data) for f in frames[1:]), "the balls should move"
    # each iteration is one acquisition run: numbering starts again
    assert [f.seq for f in again] == [0, 1, 2]


def test_settings_are_applied_and_read_back():
    with open_viky(roi_px=(0, 0, 200, 120), frame_rate_hz=150.4, nodes={"BouncingBallSize": 30}) as camera:
        info = camera.describe()
        values = {name: camera.node_value(name) for name in ("Width", "Height", "AcquisitionFrameRate", "PixelFormat")}
        (frame,) = take(camera, 1)
        assert camera.node_value("BouncingBallSize") == 30
        assert camera.node_value("NoSuchNode") is None
    assert values == {"Width": 200, "Height": 120, "AcquisitionFrameRate": 150.0, "PixelFormat": "Mono8"}
    assert info["shape"] == [120, 200] and frame.data.shape == (120, 200)
    # Viky's rate has a step of 1 Hz: describe() reports what the camera set, not what was asked
    assert info["frame_rate_hz"] == 150.0
    assert info["nodes"] == {"BouncingBallSize": 30}


def test_auto_pixel_format_takes_the_mono_format():
    with open_viky(device="0") as camera:  # RGBa8 until told otherwise
        assert camera.pixel_format == "Mono8"
        assert camera.describe()["device"]["pixel_format"] == "Mono8"
        assert camera.describe()["dtype"] == "uint8"


def test_rgba8_gives_grey_frames_as_the_sum_of_r_g_and_b():
    with open_viky(device="2", pixel_format="RGBa8", roi_px=(0, 0, 160, 100)) as camera:
        info = camera.describe()
        frames = take(camera, 3)
    assert info["dtype"] == "uint16" and info["shape"] == [100, 160]
    assert info["device"]["pixel_format"] == "RGBa8"
    assert info["device"]["converted_to_grey"] == "sum of R, G and B"
    for frame in frames:
        assert frame.data.shape == (100, 160) and frame.data.dtype == np.uint16
        assert frame.data.max() <= 3 * 255  # alpha is not added in


def test_the_producer_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(VIKY.parent))
    with GenicamCamera(cti="", device="VikyTL_DEV_blue", buffers=4) as camera:
        assert camera.describe()["device"]["serial"] == "2"
        assert camera.describe()["device"]["producer"] == str(VIKY)


def test_no_producer_anywhere_says_what_to_set(monkeypatch):
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    with pytest.raises(InputError, match=r"no GenTL producer: set cti .* or GENICAM_GENTL64_PATH"):
        GenicamCamera(cti="")


def test_producer_files_that_cannot_be_used(tmp_path):
    missing = tmp_path / "absent.cti"
    with pytest.raises(InputError, match="no such file") as caught:
        open_viky(cti=str(missing))
    assert str(missing) in str(caught.value)
    text = tmp_path / "notes.cti"
    text.write_text("not a library\n")
    with pytest.raises(InputError, match="cannot be loaded as a shared library"):
        open_viky(cti=str(text))
    # a real shared library that is no GenTL producer (genicam would crash the interpreter on it)
    import _ctypes

    with pytest.raises(InputError, match="is a shared library but not a GenTL producer"):
        open_viky(cti=_ctypes.__file__)


def test_a_wrong_device_lists_the_cameras_found():
    with pytest.raises(InputError) as caught:
        open_viky(device="12345")
    message = str(caught.value)
    assert "no camera '12345' among the 3 found" in message
    for serial, colour in (("0", "red"), ("1", "green"), ("2", "blue")):
        assert f"serial '{serial}', id 'VikyTL_DEV_{colour}'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"nodes": {"BouncingBallSise": 3}}, r"node BouncingBallSise = 3 \(nodes\): .*did you mean BouncingBallSize"),
        ({"nodes": {"BouncingBallSize": 99}}, r"BouncingBallSize = 99 \(nodes\): out of range; allowed: 1\.\.40"),
        ({"nodes": {"BouncingBallSize": "big"}}, r"BouncingBallSize = 'big' \(nodes\): it takes an integer"),
        ({"nodes": {"PayloadSize": 1}}, r"PayloadSize = 1 \(nodes\): it is read-only \(now \d+\)"),
        ({"nodes": {"ChunkSelector": "Nope"}}, r"not one of its entries .*allowed: one of NrBounces, Scan3dData"),
        # (running FancyBallOperation makes Viky take seconds to close, so only its refusal is tested)
        ({"nodes": {"FancyBallOperation": False}}, r"it is a command; set it to true to run it"),
        ({"pixel_format": "Mono16"}, r"pixel_format 'Mono16' is not offered .* it offers RGBa8, Mono8"),
        ({"roi_px": (0, 0, 900, 200)}, r"Width = 900 \(roi_px\): out of range; allowed: 100\.\.800 in steps of 1"),
        ({"roi_px": (8, 0, 200, 200)}, r"roi_px starts at x = 8 but the camera has no OffsetX node"),
        ({"exposure_us": 1000.0}, r"exposure_us: the camera has no ExposureTime node"),
        (
            {"frame_rate_hz": 500.0},
            r"AcquisitionFrameRate = 500\.0 \(frame_rate_hz\): out of range; allowed: 1\.\.200 Hz",
        ),
        ({"buffers": 0}, r"buffers must be a positive integer"),
        ({"fetch_timeout_s": 0}, r"fetch_timeout_s must be a positive number"),
    ],
)
def test_refused_settings_name_the_node_the_value_and_what_is_allowed(settings, expected):
    with pytest.raises(InputError, match=expected) as caught:
        open_viky(**settings)
    assert "\n" not in str(caught.value)


def test_a_refused_setting_leaves_the_camera_free():
    with pytest.raises(InputError):
        open_viky(nodes={"BouncingBallSize": 99})
    with open_viky() as camera:  # the same camera opens again: the failed one was released
        assert camera.describe()["device"]["serial"] == "1"


def test_a_second_camera_on_the_same_producer_says_the_producer_is_in_use():
    # GenTL lets a process load a producer once: the first camera holds it until it is closed
    with open_viky(device="0"):
        with pytest.raises(InputError, match="already in use in this process .* close that camera first"):
            open_viky(device="1")
    with open_viky(device="1") as camera:
        assert camera.describe()["device"]["serial"] == "1"


def test_opening_keeps_the_applications_ctrl_c_handler():
    before = signal.getsignal(signal.SIGINT)
    with open_viky():
        assert signal.getsignal(signal.SIGINT) is before


def test_close_is_idempotent_and_a_closed_camera_cannot_iterate():
    camera = open_viky()
    camera.close()
    camera.close()
    with pytest.raises(ValueError, match="closed"):
        next(iter(camera))


def test_a_slow_camera_times_out_without_error():
    # 4 frames/s and 0.05 s per fetch: several timeouts between two frames
    with open_viky(frame_rate_hz=4, fetch_timeout_s=0.05) as camera:
        frames = take(camera, 2)
    assert [f.seq for f in frames] == [0, 1]


def test_stop_from_another_thread_ends_an_iteration_waiting_for_frames():
    with open_viky(frame_rate_hz=5, fetch_timeout_s=0.2) as camera:
        consumer = Consumer(camera)
        consumer.start()
        assert wait_until(lambda: len(consumer.frames) >= 1), "no frame came"
        camera.stop()  # the consumer is now waiting for the next frame (5 frames/s)
        consumer.join(timeout=5.0)
        assert not consumer.is_alive(), "stop() did not end the iteration"
        assert consumer.error is None
        assert take(camera, 1) == [], "a stopped camera yields nothing more"


def test_a_camera_destroyed_between_frames_raises_camera_error_with_the_frame_count():
    with open_viky(frame_rate_hz=100) as camera:
        seen = 0
        with pytest.raises(CameraError, match=r"stopped delivering frames after 5 frames: .*destroyed") as caught:
            for _frame in camera:
                seen += 1
                if seen == 5:
                    camera._ia.destroy()  # what the driver does to a device that went away
        assert seen == 5
        assert "\n" not in str(caught.value)


def test_a_producer_reset_under_a_waiting_fetch_raises_camera_error_without_hanging():
    with open_viky(frame_rate_hz=5, fetch_timeout_s=0.5) as camera:
        consumer = Consumer(camera)
        consumer.start()
        assert wait_until(lambda: len(consumer.frames) >= 2), "no frames came"
        camera._harvester.reset()  # the GenTL producer closed under the running acquisition
        consumer.join(timeout=10.0)
        assert not consumer.is_alive(), "the iteration hung after the producer was reset"
    assert isinstance(consumer.error, CameraError), consumer.error
    assert f"stopped delivering frames after {len(consumer.frames)} frames" in str(consumer.error)


def test_frames_lost_in_the_driver_show_as_gaps_equal_to_the_frame_id_jumps():
    """Two buffers and a consumer that pauses: Viky keeps the two oldest frames and drops the newer ones."""
    buffers = 2
    with open_viky(frame_rate_hz=100, buffers=buffers) as camera:
        frames = []
        iterator = iter(camera)
        try:
            frames.append(next(iterator))
            for _attempt in range(5):  # bounded: a producer slower than its rate fills the buffers later
                before = len(frames) - 1
                time.sleep(0.3)  # not fetching: both buffers fill, then frames are lost
                frames.extend(next(iterator) for _ in range(buffers + 4))
                steps = np.diff([f.seq for f in frames[before:]])
                if steps.max() > 1:
                    break
        finally:
            iterator.close()
    seqs = np.array([f.seq for f in frames])
    ids = np.array([f.metadata["camera_frame_id"] for f in frames])
    assert np.array_equal(np.diff(seqs), np.diff(ids)), "seq gaps must be the camera's frame ID gaps"
    assert np.all(np.diff(seqs) >= 1)
    assert steps.max() > 1, "frames were lost during the pause but no gap shows"
    # The frames fetched after the pause start with the `buffers` frames that filled the buffers when
    # the pause began; the gap (frames dropped while the buffers were full) comes after them.
    assert int(np.argmax(steps)) == buffers
