"""File adapters: round trips, memory mapping, colour, natural order, and the bad-input corpus.

The corpus says for every bad input which error class it gives and whether it
comes when the file is opened or while its frames are iterated.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from plstream.acquire_adapters import (
    CorruptInputError,
    FrameSource,
    InputError,
    TiffFolderSource,
    TiffStackSource,
    VideoSource,
    open_movie,
)
from plstream.acquire_adapters.files.tiff_folder import natural_key


def _stack(n=12, shape=(32, 48), seed=0, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 4000, (n, *shape)).astype(dtype)


def _read_all(source):
    with source:
        return np.stack([frame.data for frame in source])


def _write_contiguous(path, stack):
    with tifffile.TiffWriter(path) as tif:
        for frame in stack:
            tif.write(frame, contiguous=True, photometric="minisblack")


def _write_avi(path, n=30, shape=(48, 64), fps=25.0, colour=False):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (shape[1], shape[0]), colour)
    assert writer.isOpened(), "OpenCV cannot write MJPG AVI here"
    rng = np.random.default_rng(1)
    frames = []
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i in range(n):
        frame = (60 + 40 * np.sin((x + 2 * i) / 6.0) + 30 * np.cos(y / 5.0)).astype(np.uint8)
        frame[10:20, i % 40 : i % 40 + 12] = 220
        if colour:
            frame = np.dstack([frame, np.roll(frame, 5, axis=1), 255 - frame])
        else:
            frame = frame + rng.integers(0, 3, shape, dtype=np.uint8)
        writer.write(frame)
        frames.append(frame)
    writer.release()
    return np.stack(frames)


# ------------------------------------------------------------------ TIFF stacks
def test_tiff_stack_round_trip_contiguous(tmp_path):
    stack = _stack()
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TYX", "finterval": 0.05})
    with TiffStackSource(path) as source:
        assert isinstance(source, FrameSource) and source.contiguous
        assert source.describe() == {
            "source": "tiff_stack",
            "path": str(path),
            "shape": [32, 48],
            "dtype": "uint16",
            "n_frames": 12,
            "frame_rate_hz": pytest.approx(20.0),
        }
        frames = list(source)
    assert [f.seq for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i * 0.05 for i in range(12)])
    np.testing.assert_array_equal(np.stack([f.data for f in frames]), stack)
    assert all(f.data.flags.c_contiguous and f.data.flags.owndata for f in frames)


@pytest.mark.parametrize("how", ["zlib pages", "big-endian", "one write per page", "generic pages"])
def test_tiff_stack_layouts_give_the_same_frames(tmp_path, how):
    stack = _stack(n=7)
    path = tmp_path / "s.tif"
    if how == "zlib pages":
        tifffile.imwrite(path, stack, compression="zlib")
    elif how == "big-endian":
        tifffile.imwrite(path, stack, byteorder=">", photometric="minisblack")
    else:
        with tifffile.TiffWriter(path) as tif:
            for frame in stack:
                tif.write(frame, photometric="minisblack", metadata=None if how == "generic pages" else {})
    with TiffStackSource(path) as source:
        assert source.describe()["n_frames"] == 7 and source.describe()["frame_rate_hz"] is None
        frames = np.stack([f.data for f in source])
    assert frames.dtype == np.dtype(np.uint16)  # native byte order
    np.testing.assert_array_equal(frames, stack)


def test_a_large_stack_is_read_frame_by_frame_not_loaded(tmp_path):
    path = tmp_path / "big.tif"
    frame_shape = (256, 512)
    n = 240  # 62.9 MB
    with tifffile.TiffWriter(path) as tif:
        for i in range(n):
            tif.write(np.full(frame_shape, i, np.uint16), contiguous=True, photometric="minisblack")
    size = path.stat().st_size
    assert size > 60e6
    tracemalloc.start()
    try:
        with TiffStackSource(path) as source:
            assert source.contiguous
            checked = 0
            for frame in source:
                assert frame.data[0, 0] == frame.seq
                checked += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert checked == n
    assert peak < 5e6 < size / 10, f"peak traced memory {peak / 1e6:.1f} MB while reading a {size / 1e6:.0f} MB stack"


def test_rgb_pages_become_grey(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 16, 24, 3), dtype=np.uint8)
    rgb[1] = rgb[1, :, :, :1]  # a grey frame stored as RGB: taken exactly
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    grey = _read_all(TiffStackSource(path))
    assert grey.shape == (3, 16, 24) and grey.dtype == np.uint8
    luma = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
    np.testing.assert_array_equal(grey[[0, 2]], luma[[0, 2]])
    np.testing.assert_array_equal(grey[1], rgb[1, :, :, 0])


def test_declared_frame_size_is_checked_before_decoding(tmp_path):
    path = tmp_path / "bomb.tif"
    tiles = (np.zeros((256, 256), np.uint8) for _ in range(16 * 16))
    tifffile.imwrite(path, tiles, shape=(4096, 4096), dtype=np.uint8, tile=(256, 256), compression="zlib")
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="max_frame_bytes") as error:
            TiffStackSource(path, max_frame_bytes=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert type(error.value) is InputError and str(path) in str(error.value) and "16777216 bytes" in str(error.value)
    assert peak < 2_000_000


# ---------------------------------------------------------------------- folders
def test_folder_is_read_in_natural_order(tmp_path):
    for value, name in [(10, "img10.tif"), (2, "img2.tif"), (1, "img1.tif"), (3, "IMG3.TIF")]:
        tifffile.imwrite(tmp_path / name, np.full((8, 10), value, np.uint16))
    (tmp_path / "._img1.tif").write_bytes(b"macOS resource fork")
    (tmp_path / "notes.txt").write_text("not an image")
    with TiffFolderSource(tmp_path) as source:
        assert isinstance(source, FrameSource)
        d = source.describe()
        assert d["source"] == "tiff_folder" and d["n_frames"] == 4 and d["shape"] == [8, 10]
        assert d["frame_rate_hz"] is None
        values = [int(frame.data[0, 0]) for frame in source]
    assert values == [1, 2, 3, 10]
    assert sorted(["b10", "b9", "a1x2", "a1x10"], key=natural_key) == ["a1x2", "a1x10", "b9", "b10"]


def test_folder_shape_mismatch_names_the_file_and_both_shapes(tmp_path):
    tifffile.imwrite(tmp_path / "f1.tif", np.zeros((8, 10), np.uint16))
    tifffile.imwrite(tmp_path / "f2.tif", np.zeros((8, 10), np.uint16))
    tifffile.imwrite(tmp_path / "f3.tif", np.zeros((9, 10), np.uint16))
    source = TiffFolderSource(tmp_path)
    frames = iter(source)
    next(frames), next(frames)
    with pytest.raises(InputError) as error:
        next(frames)
    message = str(error.value)
    assert type(error.value) is InputError
    assert "f3.tif" in message and "9x10" in message and "8x10" in message


def test_folder_with_a_damaged_image_names_it(tmp_path):
    tifffile.imwrite(tmp_path / "a1.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "a2.tif", np.zeros((64, 64), np.uint16), compression="zlib")
    data = (tmp_path / "a2.tif").read_bytes()
    (tmp_path / "a2.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptInputError, match="a2.tif"):
        _read_all(TiffFolderSource(tmp_path))


def test_empty_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no files matching"):
        TiffFolderSource(tmp_path)


# ----------------------------------------------------------------------- videos
def test_video_round_trip(tmp_path):
    path = tmp_path / "v.avi"
    written = _write_avi(path)
    with VideoSource(path) as source:
        assert isinstance(source, FrameSource)
        d = source.describe()
        assert d["source"] == "video" and d["shape"] == [48, 64] and d["dtype"] == "uint8"
        assert d["n_frames"] == 30 and d["frame_rate_hz"] == pytest.approx(25.0)
        frames = list(source)
    assert [f.seq for f in frames] == list(range(30))
    assert frames[3].timestamp == pytest.approx(3 / 25.0)
    decoded = np.stack([f.data for f in frames]).astype(float)
    assert np.mean(np.abs(decoded - written)) < 3.0  # MJPG is lossy


def test_colour_video_becomes_grey(tmp_path):
    path = tmp_path / "c.avi"
    written = _write_avi(path, n=5, colour=True)
    frames = _read_all(VideoSource(path))
    assert frames.shape == (5, 48, 64) and frames.dtype == np.uint8
    expected = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in written]).astype(float)
    assert np.mean(np.abs(frames - expected)) < 4.0


# -------------------------------------------------------------------- open_movie
def test_open_source_picks_the_adapter(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", _stack(n=2))
    (tmp_path / "s.dat").write_bytes((tmp_path / "s.tif").read_bytes())
    _write_avi(tmp_path / "v.avi", n=3)
    (tmp_path / "folder").mkdir()
    tifffile.imwrite(tmp_path / "folder" / "i1.tif", np.zeros((4, 4), np.uint8))
    kinds = {name: type(open_movie(tmp_path / name)) for name in ("s.tif", "s.dat", "v.avi", "folder")}
    assert kinds == {
        "s.tif": TiffStackSource,
        "s.dat": TiffStackSource,
        "v.avi": VideoSource,
        "folder": TiffFolderSource,
    }
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(InputError, match="unsupported file type .xyz.*TIFF.*mp4"):
        open_movie(tmp_path / "notes.xyz")


# ----------------------------------------------------------------- bad inputs
def _truncated_tiff(fraction):
    def make(folder: Path) -> Path:
        path = folder / "movie.tif"
        _write_contiguous(path, _stack(n=20, shape=(64, 64)))
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return make


def _truncated_zlib_tiff(folder: Path) -> Path:
    path = folder / "zlib.tif"
    tifffile.imwrite(path, _stack(n=20, shape=(64, 64)), compression="zlib")
    data = path.read_bytes()
    # cut inside the last page's data, leaving the IFD chain (written before the data) intact
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[-1].dataoffsets[0]
    path.write_bytes(data[: last + 10] + bytes(len(data) - last - 10))
    return path


def _garbage_after_header(folder: Path) -> Path:
    path = folder / "garbage.tif"
    path.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000))
    return path


def _zero_bytes(folder: Path) -> Path:
    path = folder / "empty.tif"
    path.write_bytes(b"")
    return path


def _text_named_tif(folder: Path) -> Path:
    path = folder / "notes.tif"
    path.write_text("this is a lab notebook, not an image\n" * 20)
    return path


def _missing(folder: Path) -> Path:
    return folder / "nowhere" / "movie.tif"


def _junk_avi(folder: Path) -> Path:
    path = folder / "junk.avi"
    path.write_bytes(np.random.default_rng(1).bytes(20000))
    return path


def _truncated_avi(folder: Path) -> Path:
    path = folder / "cut.avi"
    _write_avi(path, n=30)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nan_tiff(folder: Path) -> Path:
    path = folder / "float.tif"
    stack = np.ones((4, 16, 16), np.float32)
    stack[2, 3, 3] = np.nan
    tifffile.imwrite(path, stack, photometric="minisblack")
    return path


BAD_INPUTS = [
    # (name, maker, error class, raised when)
    ("tiff truncated at 10 %", _truncated_tiff(0.10), CorruptInputError, "open"),
    ("tiff truncated at 50 %", _truncated_tiff(0.50), CorruptInputError, "open"),
    ("tiff truncated at 99.9 %", _truncated_tiff(0.999), CorruptInputError, "open"),
    ("compressed tiff with a damaged last page", _truncated_zlib_tiff, CorruptInputError, "iterate"),
    ("garbage after a TIFF header", _garbage_after_header, CorruptInputError, "open"),
    ("zero-byte .tif", _zero_bytes, InputError, "open"),
    ("text file named .tif", _text_named_tif, InputError, "open"),
    ("missing path", _missing, InputError, "open"),
    ("junk .avi", _junk_avi, InputError, "open"),
    ("truncated .avi", _truncated_avi, CorruptInputError, "iterate"),
    ("float tiff with NaN", _nan_tiff, CorruptInputError, "iterate"),
]


@pytest.mark.parametrize("name, make, error_class, when", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gives_exactly_one_documented_error(tmp_path, name, make, error_class, when):
    path = make(tmp_path)
    delivered = 0
    with pytest.raises(InputError) as error:
        source = open_movie(path)
        assert when == "iterate", f"{name}: expected an error at open"
        with source:
            for _ in source:
                delivered += 1
    assert type(error.value) is error_class, f"{name}: {error.value!r}"
    assert str(path) in str(error.value)
    if when == "open":
        assert delivered == 0
    if name == "truncated .avi":
        assert 0 < delivered < 30 and f"only {delivered} could be decoded" in str(error.value)
        assert "declares 30 frames" in str(error.value)
    if name == "float tiff with NaN":
        assert delivered == 2 and "frame 2" in str(error.value)


def test_truncation_messages_say_expected_and_found(tmp_path):
    with pytest.raises(CorruptInputError) as error:
        TiffStackSource(_truncated_tiff(0.999)(tmp_path))
    assert "found 19 readable pages of the 20 declared" in str(error.value)
