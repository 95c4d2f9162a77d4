"""Image input and output (gaussdiff.data.images): folders and .npy arrays read to uint8 (N, C, H, W), grids and
folders of PNGs written back, each checked against values computed here by hand (every pixel value is exact, so
the comparisons are exact unless a tolerance is stated)."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from gaussdiff.data.images import (ImageSet, is_image_source, read_images, save_image_folder, save_image_grid,
                                   to_display)
from gaussdiff.errors import InputError


def _save(path, array, mode=None, **info):
    """Write a uint8 array (H, W) or (H, W, C) as an image file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array, dtype=np.uint8), mode) if mode else Image.fromarray(array)
    image.save(path, **info)
    return path


def _const(path, value, size=(4, 4)):
    """A gray PNG of one value."""
    return _save(path, np.full(size, value, dtype=np.uint8))


def _read_back(path):
    """(mode, uint8 array) of an image file, the file closed again."""
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _over_white(c, a):
    """round(a c + (1 - a) 255) with a = alpha / 255, the compositing the module documents."""
    return int(np.floor(a / 255 * c + (1 - a / 255) * 255 + 0.5))


# ---------------------------------------------------------------------------------------------
# Folders: order, classes, sizes.


def test_class_folders_give_sorted_classes_and_labels(tmp_path):
    _const(tmp_path / "dog" / "b.png", 40)
    _const(tmp_path / "cat" / "z.png", 10)
    _const(tmp_path / "cat" / "a.PNG", 20)
    _const(tmp_path / "dog" / "deeper" / "a.png", 30)  # below the class folder: still class 'dog'
    _const(tmp_path / "dog" / ".hidden.png", 99)  # hidden: ignored
    (tmp_path / "notes.txt").write_text("not an image")
    out = read_images(tmp_path)
    assert isinstance(out, ImageSet)
    assert out.classes == ["cat", "dog"]
    # sorted relative paths: cat/a.PNG, cat/z.png, dog/b.png, dog/deeper/a.png
    assert out.labels.tolist() == [0, 0, 1, 1] and out.labels.dtype == np.int64
    assert out.images[:, 0, 0, 0].tolist() == [20, 10, 40, 30]
    assert out.images.shape == (4, 1, 4, 4) and out.images.dtype == np.uint8
    assert out.levels == 256 and out.skipped == []


def test_flat_folder_has_no_labels(tmp_path):
    _const(tmp_path / "b.png", 2)
    _const(tmp_path / "a.jpeg", 0)  # a JPEG of one gray value decodes to that value exactly
    out = read_images(tmp_path)
    assert out.labels is None and out.classes is None
    assert out.images[:, 0].tolist() == np.stack([np.full((4, 4), 0), np.full((4, 4), 2)]).tolist()


def test_mixed_loose_and_class_files_refused(tmp_path):
    _const(tmp_path / "a.png", 1)
    _const(tmp_path / "cls" / "b.png", 2)
    with pytest.raises(InputError, match="directly in the folder"):
        read_images(tmp_path)


def test_sizes_without_image_size(tmp_path):
    _const(tmp_path / "a.png", 1, (4, 4))
    _const(tmp_path / "b.png", 1, (5, 5))
    with pytest.raises(InputError, match="--image-size"):
        read_images(tmp_path)
    _const(tmp_path / "b.png", 1, (4, 6))  # rows 4, columns 6: not square
    with pytest.raises(InputError, match="not square"):
        read_images(tmp_path)
    assert read_images(tmp_path, image_size=3).images.shape == (2, 1, 3, 3)


def test_centre_crop_keeps_the_middle_columns_and_rows(tmp_path):
    # Pixel value = 10 * column in a 5-row x 9-column image: the centred 5x5 square is columns 2..6.
    _save(tmp_path / "w" / "wide.png", np.tile(10 * np.arange(9, dtype=np.uint8), (5, 1)))
    assert read_images(tmp_path / "w", image_size=5).images[0, 0].tolist() == [[20, 30, 40, 50, 60]] * 5
    # 8 rows x 5 columns: offset (8 - 5) // 2 = 1, rows 1..5.
    _save(tmp_path / "t" / "tall.png", np.repeat(10 * np.arange(8, dtype=np.uint8)[:, None], 5, axis=1))
    assert read_images(tmp_path / "t", image_size=5).images[0, 0, :, 0].tolist() == [10, 20, 30, 40, 50]


def test_resize_keeps_constants_and_a_step_edge_symmetric(tmp_path):
    _save(tmp_path / "c" / "const.png", np.full((20, 40, 3), (200, 17, 99), dtype=np.uint8))
    out = read_images(tmp_path / "c", image_size=8).images
    assert out.shape == (1, 3, 8, 8)
    assert (out[0].reshape(3, -1).T == [200, 17, 99]).all()  # the filter's weights sum to one
    # A 16x16 step (columns 0..7 black, 8..15 white) halved: Lanczos-3 at scale 2 reaches 6 input pixels each
    # side of an output centre (input 1, 3, ..., 15), so output column 0 sees only black and column 7 only white;
    # the filter is symmetric, so out[j] + out[7 - j] = 255 up to one level of rounding per side.
    step = np.zeros((16, 16), dtype=np.uint8)
    step[:, 8:] = 255
    _save(tmp_path / "s" / "step.png", step)
    out = read_images(tmp_path / "s", image_size=8).images[0, 0].astype(int)
    assert (out[:, 0] == 0).all() and (out[:, 7] == 255).all()
    assert (abs(out + out[:, ::-1] - 255) <= 1).all()
    assert (out == out[:1]).all()  # every row alike


# ---------------------------------------------------------------------------------------------
# Modes.


def _square(pixels):
    """Four pixels (each a value or a tuple of channel values) as a 2x2 array, row by row."""
    array = np.array(pixels, dtype=np.uint8)
    return array.reshape(2, 2, *array.shape[1:])


def _pixels(images):
    """The four pixels of the one 2x2 image in uint8 (1, C, 2, 2), row by row: a value or a list per pixel."""
    c = images.shape[1]
    flat = images[0].reshape(c, 4).T
    return flat[:, 0].tolist() if c == 1 else flat.tolist()


def test_rgba_over_white(tmp_path):
    _save(tmp_path / "a.png", _square([(10, 20, 30, 0), (10, 20, 30, 255), (0, 100, 200, 128), (9, 9, 9, 1)]),
          "RGBA")
    expected = [[255, 255, 255], [10, 20, 30], [_over_white(c, 128) for c in (0, 100, 200)], [_over_white(9, 1)] * 3]
    assert _pixels(read_images(tmp_path).images) == expected


def test_la_over_white_stays_gray(tmp_path):
    _save(tmp_path / "a.png", _square([(50, 0), (50, 255), (50, 64), (0, 200)]), "LA")
    out = read_images(tmp_path)
    assert out.images.shape == (1, 1, 2, 2)
    assert _pixels(out.images) == [255, 50, _over_white(50, 64), _over_white(0, 200)]


def test_palette_images_and_transparency(tmp_path):
    p = Image.fromarray(_square([0, 1, 2, 0]), "P")
    p.putpalette([255, 0, 0, 0, 0, 255, 7, 8, 9])
    p.save(tmp_path / "p.png", transparency=2)  # index 2 transparent
    out = read_images(tmp_path)
    assert out.images.shape == (1, 3, 2, 2)  # a coloured palette: RGB
    assert _pixels(out.images) == [[255, 0, 0], [0, 0, 255], [255, 255, 255], [255, 0, 0]]


def test_gray_palette_is_gray_and_mode_1_is_black_and_white(tmp_path):
    p = Image.fromarray(_square([0, 1, 1, 0]), "P")
    p.putpalette([30, 30, 30, 200, 200, 200, 255, 0, 0])  # the red entry is unused
    p.save(tmp_path / "p.png")
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "q.png")
    out = read_images(tmp_path)
    assert out.images.shape == (2, 1, 2, 2)
    assert _pixels(out.images[:1]) == [30, 200, 200, 30] and _pixels(out.images[1:]) == [255, 0, 0, 255]


def test_gray_becomes_rgb_by_repeating_and_rgb_becomes_luma(tmp_path):
    _save(tmp_path / "a.png", _square([10, 250, 0, 255]))
    _save(tmp_path / "b.png", _square([(10, 200, 30), (123, 45, 67), (0, 0, 0), (255, 255, 255)]))
    both = read_images(tmp_path)  # one colour image: all RGB
    assert both.images.shape == (2, 3, 2, 2)
    assert _pixels(both.images[:1]) == [[10] * 3, [250] * 3, [0] * 3, [255] * 3]
    gray = read_images(tmp_path, channels=1)
    # ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B = 123.81 and 70.83, far from a half, so rounding is unambiguous.
    assert _pixels(gray.images[1:]) == [124, 71, 0, 255]
    assert read_images(tmp_path, channels=3).images.tolist() == both.images.tolist()


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    v = [0, 1000, 40000, 65535]
    Image.fromarray(np.array(v, dtype=np.uint16).reshape(2, 2)).save(tmp_path / "a.png")
    assert _read_back(tmp_path / "a.png")[0].startswith("I")
    assert _pixels(read_images(tmp_path).images) == [round(x * 255 / 65535) for x in v]  # 0, 4, 156, 255: no ties


# ---------------------------------------------------------------------------------------------
# Bad folders.


def test_corrupt_and_empty_files_are_skipped_and_listed(tmp_path):
    good = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = _png_bytes(good)
    for name in ("a.png", "c.png", "e.png"):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "b.png").write_bytes(data[: len(data) * 6 // 10])  # header intact, pixel data cut
    (tmp_path / "d.jpg").write_bytes(b"")
    with Image.open(tmp_path / "b.png") as lazy:  # opens without complaint: only decoding finds the truncation
        assert lazy.size == (32, 32)
    out = read_images(tmp_path)
    assert out.skipped == [str(tmp_path / "b.png"), str(tmp_path / "d.jpg")]
    assert out.images.shape == (3, 3, 32, 32)
    assert (out.images == good.transpose(2, 0, 1)).all()
    assert "2 unreadable" in out.source


def test_too_many_unreadable_files_refused(tmp_path):
    _const(tmp_path / "a.png", 1)
    (tmp_path / "b.png").write_bytes(b"not a png")
    assert read_images(tmp_path).images.shape[0] == 1  # exactly half unreadable: accepted
    (tmp_path / "c.jpeg").write_bytes(b"")
    with pytest.raises(InputError, match="2 of 3"):
        read_images(tmp_path)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(InputError, match="3 of 3"):
        read_images(tmp_path)


def test_empty_or_imageless_folder_refused(tmp_path):
    with pytest.raises(InputError, match="empty") as e:
        read_images(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="no image files"):
        read_images(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        read_images(tmp_path / "missing")
    with pytest.raises(InputError, match="expected a folder"):
        read_images(tmp_path / "x.txt")


def test_bad_arguments_refused(tmp_path):
    _const(tmp_path / "a.png", 1)
    with pytest.raises(InputError, match="channels"):
        read_images(tmp_path, channels=2)
    with pytest.raises(InputError, match="image size"):
        read_images(tmp_path, image_size=0)


# ---------------------------------------------------------------------------------------------
# .npy arrays.


def _npy(path, array, **kw):
    np.save(path, array, **kw)
    return path


def test_npy_layouts_agree(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (3, 3, 5, 5), dtype=np.uint8)  # (N, C, H, W)
    first = read_images(_npy(tmp_path / "f.npy", rgb)).images
    last = read_images(_npy(tmp_path / "l.npy", rgb.transpose(0, 2, 3, 1))).images
    assert first.tolist() == rgb.tolist() and last.tolist() == rgb.tolist()
    gray = rgb[:, 0]
    for array in (gray, gray[:, None], gray[..., None]):  # (N, H, W), (N, 1, H, W), (N, H, W, 1)
        out = read_images(_npy(tmp_path / "g.npy", array))
        assert out.images.tolist() == gray[:, None].tolist() and out.labels is None and out.levels == 256
    wide_ints = read_images(_npy(tmp_path / "i.npy", gray.astype(np.int64))).images
    assert wide_ints.dtype == np.uint8 and wide_ints.tolist() == gray[:, None].tolist()


@pytest.mark.parametrize("shape, message", [((2, 3, 4, 3), "ambiguous"), ((2, 4, 4, 4), "no channel axis"),
                                            ((5, 4), "expected images"), ((1, 1, 4, 4, 1), "expected images"),
                                            ((0, 4, 4), "no images")])
def test_npy_bad_shapes_refused(tmp_path, shape, message):
    with pytest.raises(InputError, match=message):
        read_images(_npy(tmp_path / "a.npy", np.zeros(shape, dtype=np.uint8)))


def test_npy_float_pixel_range_maps_exactly(tmp_path):
    k = np.arange(256).reshape(1, 16, 16)
    x = 2 * k / 255 - 1  # level k of [-1, 1]
    out = read_images(_npy(tmp_path / "a.npy", x.astype(np.float32)), pixel_range=(-1, 1)).images
    assert out[0, 0].tolist() == k[0].tolist()
    with pytest.raises(InputError, match="--pixel-range"):
        read_images(tmp_path / "a.npy")
    bad = x.copy()
    bad[0, 0, :2] = [1.5, -2]
    with pytest.raises(InputError, match="2 values lie outside"):
        read_images(_npy(tmp_path / "b.npy", bad), pixel_range=(-1, 1))
    bad[0, 0, :3] = [np.nan, np.inf, 0]
    with pytest.raises(InputError, match="2 values are NaN or Inf"):
        read_images(_npy(tmp_path / "b.npy", bad), pixel_range=(-1, 1))
    with pytest.raises(InputError, match="pixel range"):
        read_images(tmp_path / "a.npy", pixel_range=(1, 1))


def test_npy_integers_outside_bytes_refused(tmp_path):
    with pytest.raises(InputError, match="1 values lie outside 0..255"):
        read_images(_npy(tmp_path / "a.npy", np.array([[[0, 256]]], dtype=np.int16)))
    # ... unless a pixel range rescales them: 0..1000 -> round(v * 255 / 1000)
    out = read_images(_npy(tmp_path / "a.npy", np.array([[[0, 2], [500, 1000]]], dtype=np.int16)),
                      pixel_range=(0, 1000)).images
    assert out[0, 0].tolist() == [[0, 1], [128, 255]]  # 0.51 -> 1, 127.5 -> 128 (2 * 500 * 255 / 2000 exact)


_UNPICKLED = []


def _record_unpickling(flag):
    """Called only if a pickle made by _Trap is loaded."""
    _UNPICKLED.append(flag)
    return 0


class _Trap:
    def __reduce__(self):
        return _record_unpickling, ("unpickled",)


def test_npy_object_and_other_dtypes_refused_without_unpickling(tmp_path):
    trap = np.empty((2, 4, 4), dtype=object)
    trap[...] = _Trap()
    path = _npy(tmp_path / "o.npy", trap, allow_pickle=True)
    assert is_image_source(path)  # the header alone says 3 dimensions
    with pytest.raises(InputError, match="object"):
        read_images(path)
    assert _UNPICKLED == []
    for dtype in (bool, complex, [("a", "u1")]):
        with pytest.raises(InputError, match="expected integers or floats"):
            read_images(_npy(tmp_path / "d.npy", np.zeros((2, 4, 4), dtype=dtype)))
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable .npy"):
        read_images(tmp_path / "x.npy")


def test_npy_resize_and_channels_follow_the_folder_pipeline(tmp_path):
    wide = np.tile(10 * np.arange(10, dtype=np.uint8), (2, 6, 1))  # (N, H=6, W=10)
    out = read_images(_npy(tmp_path / "w.npy", wide), image_size=6).images
    assert out.shape == (2, 1, 6, 6) and out[0, 0, 0].tolist() == [20, 30, 40, 50, 60, 70]
    with pytest.raises(InputError, match="not square"):
        read_images(tmp_path / "w.npy")
    assert read_images(tmp_path / "w.npy", image_size=6, channels=3).images.tolist() == \
        np.repeat(out, 3, axis=1).tolist()
    rgb = _square([(10, 200, 30), (123, 45, 67), (0, 0, 0), (255, 255, 255)])[None]  # (1, 2, 2, 3)
    _save(tmp_path / "png" / "a.png", rgb[0])
    from_npy = read_images(_npy(tmp_path / "c.npy", rgb), channels=1).images
    assert from_npy.tolist() == read_images(tmp_path / "png", channels=1).images.tolist()
    assert _pixels(from_npy) == [124, 71, 0, 255]


def test_is_image_source(tmp_path):
    assert is_image_source(tmp_path)
    assert not is_image_source(_npy(tmp_path / "rows.npy", np.zeros((5, 2))))
    assert is_image_source(_npy(tmp_path / "three.npy", np.zeros((5, 2, 2))))
    assert is_image_source(_npy(tmp_path / "four.npy", np.zeros((5, 1, 2, 2))))
    assert not is_image_source(_npy(tmp_path / "five.npy", np.zeros((1, 1, 1, 1, 1))))
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "rows.csv").write_text("1,2\n3,4\n")
    assert not is_image_source(tmp_path / "bad.npy")
    assert not is_image_source(tmp_path / "rows.csv")
    assert not is_image_source(tmp_path / "missing.npy")


# ---------------------------------------------------------------------------------------------
# Writing.


def test_to_display_rounds_levels_half_up():
    v = np.arange(17, dtype=np.uint8).reshape(1, 1, 1, 17)
    # v * 255 / 16 = v * 15.9375: the fraction is a half only at v = 8 (127.5), which rounds up to 128.
    expected = [int(np.floor(x * 255 / 16 + 0.5)) for x in range(17)]
    assert expected[8] == 128
    assert to_display(v, 17)[0, 0, :, 0].tolist() == expected
    x = np.random.default_rng(2).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    assert to_display(x, 256).tolist() == x.transpose(0, 2, 3, 1).tolist()  # 256 levels: the values as they are
    with pytest.raises(ValueError, match="0..16"):
        to_display(np.full((1, 1, 2, 2), 17), 17)


def test_grid_png_has_the_exact_pixels(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 17, (5, 1, 2, 3), dtype=np.uint8)
    save_image_grid(tmp_path / "g.png", x, 17, nrow=3, scale=2, pad=1, pad_value=255)
    mode, grid = _read_back(tmp_path / "g.png")
    # 3 columns of 3 * 2 pixels, 2 rows of 2 * 2 pixels, one pixel of padding between and around.
    assert mode == "L" and grid.shape == (2 * 5 + 1, 3 * 7 + 1)
    expected = np.full((11, 22), 255)
    for i in range(5):
        top, left = 1 + (i // 3) * 5, 1 + (i % 3) * 7
        for r in range(4):
            for c in range(6):
                expected[top + r, left + c] = int(np.floor(int(x[i, 0, r // 2, c // 2]) * 255 / 16 + 0.5))
    assert grid.tolist() == expected.tolist()


def test_grid_defaults_and_colour(tmp_path):
    x = np.random.default_rng(4).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    save_image_grid(tmp_path / "g.png", x, 256)
    mode, grid = _read_back(tmp_path / "g.png")
    assert mode == "RGB"
    # ceil(sqrt(5)) = 3 columns, 2 rows; scale ceil(32 / 8) = 4: tiles of 32 px, pad 1.
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
    assert grid[1:33, 34:66].tolist() == x[1].transpose(1, 2, 0).repeat(4, 0).repeat(4, 1).tolist()
    assert (grid[34:66, 67:99] == 255).all()  # the sixth cell is empty
    assert os.listdir(tmp_path) == ["g.png"]  # no temporary file left


def test_grid_refuses_missing_folder_and_other_suffix(tmp_path):
    x = np.zeros((1, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(InputError, match="does not exist"):
        save_image_grid(tmp_path / "no" / "g.png", x, 2)
    with pytest.raises(InputError, match="PNG"):
        save_image_grid(tmp_path / "g.jpg", x, 2)
    with pytest.raises(InputError, match="scale"):
        save_image_grid(tmp_path / "g.png", x, 2, scale=0)
    assert os.listdir(tmp_path) == []


def test_folder_writer_writes_named_pngs_exactly(tmp_path):
    x = np.random.default_rng(5).integers(0, 5, (3, 3, 4, 2), dtype=np.uint8)
    names = ["000000_seed7", "000001_seed7", "000002_seed7"]
    save_image_folder(tmp_path / "out", x, 5, names)
    assert sorted(os.listdir(tmp_path / "out")) == [f"{n}.png" for n in names]
    assert os.listdir(tmp_path) == ["out"]  # the temporary folder became it
    for i, name in enumerate(names):
        mode, image = _read_back(tmp_path / "out" / f"{name}.png")
        assert mode == "RGB" and image.shape == (4, 2, 3)
        expected = np.floor(x[i].transpose(1, 2, 0).astype(int) * 255 / 4 + 0.5)
        assert image.tolist() == expected.tolist()
    # Into an existing folder: other files stay, same names are replaced, no temporary folder remains.
    (tmp_path / "out" / "keep.txt").write_text("mine")
    save_image_folder(tmp_path / "out", np.zeros((1, 1, 4, 2), dtype=np.uint8), 5, names[:1])
    assert sorted(os.listdir(tmp_path / "out")) == sorted([f"{n}.png" for n in names] + ["keep.txt"])
    assert _read_back(tmp_path / "out" / f"{names[0]}.png")[1].tolist() == np.zeros((4, 2)).tolist()
    assert os.listdir(tmp_path) == ["out"]


def test_folder_writer_refuses_and_leaves_nothing(tmp_path, monkeypatch):
    x = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(InputError, match="does not exist"):
        save_image_folder(tmp_path / "no" / "out", x, 2, ["a", "b"])
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        save_image_folder(tmp_path / "file", x, 2, ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        save_image_folder(tmp_path / "out", x, 2, ["a", "a"])
    calls = []

    def failing_save(self, fp, format=None, **params):  # the second PNG fails to encode
        calls.append(format)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(self, fp, format, **params)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(InputError, match="disk full"):
        save_image_folder(tmp_path / "out", x, 2, ["a", "b"])
    assert os.listdir(tmp_path) == ["file"]  # neither the folder nor a temporary one
