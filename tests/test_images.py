"""Image loading and preprocessing (gan2shape.gan.images) against hand-made images."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape.errors import UserError
from gan2shape.gan.images import (
    list_images,
    load_image,
    load_image_folder,
    open_image,
    random_flip_translate,
    tensor_to_uint8,
)


def _as_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_rgb_png_values_and_range(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    assert t.shape == (3, 8, 8) and t.dtype == torch.float32
    assert torch.allclose(t, torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1)
    assert np.array_equal(tensor_to_uint8(t), array)


def test_rgba_is_composited_over_the_background(tmp_path):
    array = np.zeros((4, 4, 4), dtype=np.uint8)
    array[..., 0] = 200  # red
    array[0, :, 3] = 0  # transparent row
    array[1, :, 3] = 255  # opaque row
    array[2:, :, 3] = 51  # 20 % opaque
    Image.fromarray(array, "RGBA").save(tmp_path / "a.png")
    out = _as_uint8(load_image(tmp_path / "a.png", background=(0, 100, 250))).astype(int)
    assert (out[0] == [0, 100, 250]).all()
    assert (out[1] == [200, 0, 0]).all()
    expected = np.array([0.2 * 200, 0.8 * 100, 0.8 * 250])
    assert np.abs(out[2] - expected).max() <= 1


def test_greyscale_becomes_three_equal_channels(tmp_path):
    array = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(array, "L").save(tmp_path / "g.png")
    t = load_image(tmp_path / "g.png")
    assert t.shape == (3, 4, 4)
    for c in range(3):
        assert np.array_equal(_as_uint8(t)[..., c], array)
    # 16-bit greyscale keeps the top 8 bits.
    Image.fromarray(array.astype(np.uint16) * 256).save(tmp_path / "g16.png")
    assert np.array_equal(_as_uint8(load_image(tmp_path / "g16.png"))[..., 0], array)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 8 wide x 4 tall: left half red, right half blue. Orientation 6 says "rotate
    # 90 degrees clockwise to display": upright it is 4 wide x 8 tall, red on top.
    array = np.zeros((4, 8, 3), dtype=np.uint8)
    array[:, :4, 0] = 255
    array[:, 4:, 2] = 255
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    upright = np.asarray(open_image(tmp_path / "r.jpg").convert("RGB")).astype(int)
    assert upright.shape == (8, 4, 3)
    assert upright[:3, :, 0].min() > 200 and upright[:3, :, 2].max() < 60
    assert upright[5:, :, 2].min() > 200 and upright[5:, :, 0].max() < 60


def test_centre_crop_crop_box_and_resize(tmp_path):
    # 6 wide x 4 tall, column j has value 40 * j: the centre square is columns 1..4.
    array = np.repeat((np.arange(6, dtype=np.uint8) * 40)[None, :, None], 4, 0).repeat(3, 2)
    Image.fromarray(array).save(tmp_path / "w.png")
    centre = _as_uint8(load_image(tmp_path / "w.png"))
    assert centre.shape == (4, 4, 3)
    assert list(centre[0, :, 0]) == [40, 80, 120, 160]
    box = _as_uint8(load_image(tmp_path / "w.png", crop=(2, 1, 2, 2)))
    assert box.shape == (2, 2, 3) and list(box[0, :, 0]) == [80, 120]
    small = load_image(tmp_path / "w.png", size=2)
    assert small.shape == (3, 2, 2)
    # Shrinking keeps the left-to-right ramp and averages over the columns.
    assert small[0, 0, 0] < small[0, 0, 1]
    with pytest.raises(UserError, match="outside"):
        load_image(tmp_path / "w.png", crop=(4, 0, 4, 4))


def _one_line_error(path) -> str:
    with pytest.raises(UserError) as exc:
        load_image(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_files_give_one_line_errors(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"not an image at all" * 10)
    assert "cannot read" in _one_line_error(tmp_path / "garbage.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty" in _one_line_error(tmp_path / "empty.jpg")
    assert "not found" in _one_line_error(tmp_path / "missing.png")
    # A PNG whose header declares a 0 x 0 image.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    zero = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    (tmp_path / "zero.png").write_bytes(zero)
    _one_line_error(tmp_path / "zero.png")


def test_folder_loading(tmp_path):
    (tmp_path / "images").mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(
            tmp_path / "images" / f"{k}.png")
    (tmp_path / "images" / "notes.txt").write_text("ignored")
    assert [p.name for p in list_images(tmp_path)] == ["0.png", "1.png", "2.png"]
    stack = load_image_folder(tmp_path, 4)
    assert stack.shape == (3, 3, 4, 4) and stack.dtype == torch.uint8
    assert stack[2].float().mean().item() == 20
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path / "nothing")
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "missing")


def _flip_translate_reference(images, flips, shifts_y, shifts_x):
    """Brute force: per-image mirror, then per-pixel copy with zero fill."""
    out = torch.zeros_like(images)
    b, _, h, w = images.shape
    for k in range(b):
        src = images[k].flip(2) if flips[k] else images[k]
        for y in range(h):
            for x in range(w):
                sy, sx = y - shifts_y[k], x - shifts_x[k]
                if 0 <= sy < h and 0 <= sx < w:
                    out[k, :, y, x] = src[:, sy, sx]
    return out


def test_flip_translate_matches_brute_force_and_passes_gradients():
    images = torch.randn(6, 2, 8, 8, requires_grad=True)
    seed = 3
    out = random_flip_translate(images, 0.25, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    flips = (torch.rand(6, 1, 1, 1, generator=g) < 0.5).flatten().tolist()
    sy = torch.randint(-2, 3, (6, 1, 1), generator=g).flatten().tolist()
    sx = torch.randint(-2, 3, (6, 1, 1), generator=g).flatten().tolist()
    assert torch.equal(out, _flip_translate_reference(images.detach(), flips, sy, sx))
    out.sum().backward()
    # Each output pixel that is not fill passes gradient 1 to exactly one input pixel.
    assert images.grad.sum().item() == pytest.approx((out != 0).sum().item())
