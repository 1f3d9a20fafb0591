"""The GenICam adapter's pure parts (frame numbering, grey images, format choice) and life without the extra."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from plstream.acquire_adapters import InputError
from plstream.acquire_adapters.cameras._genicam_frames import FrameIds, PixelFormat, choose_pixel_format, to_image
from plstream.acquire_adapters.cameras.genicam import GenicamCamera

MONO8 = PixelFormat("Mono8", np.dtype(np.uint8), channels=1, bits=8, packed=False, colour=False)
RGBA8 = PixelFormat("RGBa8", np.dtype(np.uint8), channels=4, bits=8, packed=False, colour=True)
RGB12 = PixelFormat("RGB12", np.dtype(np.uint16), channels=3, bits=12, packed=False, colour=True)


def seqs(ids):
    numbering = FrameIds("test camera")
    return [numbering.seq(frame_id) for frame_id in ids]


def test_seq_is_the_frame_id_minus_the_first_one():
    assert seqs([1, 2, 3, 5, 9]) == [0, 1, 2, 4, 8]


def test_a_first_frame_id_above_one_is_warned_about_once(caplog):
    with caplog.at_level(logging.WARNING):
        assert seqs([7, 8, 10]) == [0, 1, 3]
    assert len(caplog.records) == 1
    assert "first frame has camera frame ID 7" in caplog.text


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([65533, 65534, 65535, 1, 2], [0, 1, 2, 3, 4]),  # GigE Vision 1: 65535 -> 1, 0 is never used
        ([65534, 3], [0, 4]),  # 65535, 1 and 2 lost across the wrap
        ([65535, 0, 1], [0, 1, 2]),  # a counter that wraps onto 0
        ([65000, 65535, 1, 65535, 1], [0, 535, 536, 66070, 66071]),  # wraps twice
    ],
)
def test_a_16_bit_block_id_wrap_is_unwrapped(ids, expected, caplog):
    with caplog.at_level(logging.WARNING):
        assert seqs(ids) == expected
    assert "went back" not in caplog.text


def test_a_restarted_count_goes_on_from_the_last_seq_and_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        assert seqs([1, 2, 3, 1, 2]) == [0, 1, 2, 3, 4]
        assert seqs([40000, 40001, 5]) == [0, 1, 2]  # far from 65535: not a wrap
    assert caplog.text.count("went back") == 2


def test_mono_data_is_reshaped_into_a_copy():
    flat = np.arange(12, dtype=np.uint8)
    image = to_image(flat, 3, 4, MONO8)
    assert image.shape == (3, 4) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert np.array_equal(image, flat.reshape(3, 4))
    flat[0] = 99
    assert image[0, 0] == 0, "the image must not share the buffer's memory"


def test_colour_becomes_the_sum_of_r_g_and_b_without_overflow_and_without_alpha():
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[..., :3] = 255
    pixels[..., 3] = 200  # alpha
    pixels[1, 2, :3] = (1, 2, 3)
    image = to_image(pixels.ravel(), 2, 3, RGBA8)
    assert image.dtype == np.uint16 and image.shape == (2, 3)
    assert image[0, 0] == 765 and image[1, 2] == 6
    deep = np.full((1, 2, 3), 65535, np.uint16)
    image = to_image(deep.ravel(), 1, 2, RGB12)
    assert image.dtype == np.uint32 and image[0, 0] == 3 * 65535


def test_padded_rows_are_cropped_and_a_wrong_size_is_an_error():
    rows = np.arange(3 * 6, dtype=np.uint8).reshape(3, 6)  # 4 pixels + 2 bytes padding per row
    assert np.array_equal(to_image(rows.ravel(), 3, 4, MONO8), rows[:, :4])
    with pytest.raises(ValueError, match="11 values cannot be a 3x4 Mono8 image"):
        to_image(np.zeros(11, np.uint8), 3, 4, MONO8)


def test_auto_takes_the_deepest_unpacked_mono_format_then_colour():
    pytest.importorskip("harvesters.util.pfnc", reason="harvesters (pip install 'plstream[genicam]') decodes formats")
    offered = ["Mono8", "Mono12p", "Mono12", "Mono10", "RGB8", "BayerRG12"]
    assert choose_pixel_format(offered, "auto", "cam").name == "Mono12"
    assert choose_pixel_format(["Mono8", "Mono12p", "Mono10"], "auto", "cam").name == "Mono12p"
    assert choose_pixel_format(["Mono16", "Mono8"], "auto", "cam").name == "Mono16"
    assert choose_pixel_format(["BayerRG8", "RGB8", "BGRa8", "RGB12"], "auto", "cam").name == "RGB12"
    assert choose_pixel_format(offered, "BayerRG12", "cam").out_dtype == np.uint16
    with pytest.raises(InputError, match="no monochrome or RGB pixel format"):
        choose_pixel_format(["BayerRG8", "YUV422_8"], "auto", "cam")
    with pytest.raises(InputError, match="'YUV422_8' cannot be turned into a grey image"):
        choose_pixel_format(["Mono8", "YUV422_8"], "YUV422_8", "cam")


def test_without_the_extra_opening_a_camera_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "harvesters.core", None)  # as if harvesters were not installed
    with pytest.raises(InputError) as caught:
        GenicamCamera(cti="/opt/vendor/producer.cti")
    message = str(caught.value)
    assert message.startswith("genicam: ")
    assert "install the optional GenICam support: pip install 'plstream[genicam]'" in message
    assert "\n" not in message


def test_importing_the_adapter_does_not_import_harvesters():
    code = (
        "import sys, plstream.acquire_adapters.cameras.genicam\n"
        "print(sorted(m for m in ('harvesters', 'genicam') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
