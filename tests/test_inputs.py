"""The input policy without a model: every kind of file decodes to the right upright RGB,
or is refused with one sentence that names it. Files are made here, in tmp_path."""

import io
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from afiqa.errors import ImageError
from afiqa.io.inputs import MAX_PIXELS, MIN_SIDE, list_images, load_model_input, load_rgb, to_model_input
from imagegen import jpeg_bytes, scene

ROOT = Path(__file__).resolve().parent.parent


def save(img, path, **kw):
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(path, **kw)
    return path


def refused(source, *needles, **kw) -> str:
    """The one-line ImageError message for ``source``, checked to contain each needle."""
    with pytest.raises(ImageError) as info:
        load_rgb(source, **kw)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


@pytest.fixture(scope="module")
def rgb():
    return scene(3, size=(96, 72))  # (72, 96, 3), not square, so a wrong rotation shows


# -- corrupt, truncated, empty, not images --------------------------------------------------
def test_pillow_does_not_accept_truncated_images_anywhere_in_afiqa():
    import afiqa.predictor  # noqa: F401  (and what it imports)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("keep", [0.5, 0.9, "no-eoi"])
def test_a_truncated_jpeg_is_an_error_not_a_half_grey_image(tmp_path, rgb, keep):
    data = jpeg_bytes(rgb)
    cut = len(data) - 2 if keep == "no-eoi" else int(len(data) * keep)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:cut])
    refused(path, str(path), "truncated")
    refused(data[:cut], "image bytes", "truncated")


def test_a_truncated_or_damaged_png_is_an_error(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    data = buf.getvalue()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.png", "cut.png", "truncated")
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # breaks the IDAT checksum / zlib stream
    (tmp_path / "bad.png").write_bytes(bytes(damaged))
    refused(tmp_path / "bad.png", "bad.png")


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"this is not a JPEG\n" * 20, "not an image"),
        ("random.jpg", np.random.default_rng(1).bytes(4096), "not an image"),
        ("header_only.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image"),
        ("gif_without_frames.gif", b"GIF89a\x20\x00\x20\x00\x00\x00\x00;", "image"),
    ],
)
def test_files_that_are_not_images_are_refused_by_name(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    refused(path, str(path), needle)


def test_missing_paths_directories_and_empty_bytes(tmp_path):
    refused(tmp_path / "missing.jpg", "missing.jpg", "no such file")
    refused(tmp_path, str(tmp_path), "a folder, not an image file")
    refused(b"", "image bytes", "empty")
    refused(12345, "int")


def test_formats_outside_the_policy_are_refused_not_decoded(tmp_path, rgb):
    path = save(rgb, tmp_path / "icon.jpg", format="ICO")  # an icon named .jpg
    refused(path, "icon.jpg", "not an image afiqa can read")


# -- size limits -----------------------------------------------------------------------------
@pytest.mark.parametrize("w, h", [(1, 1), (4000, 12), (12, 4000), (MIN_SIDE - 1, 500)])
def test_images_with_a_side_under_min_side_are_refused(tmp_path, w, h):
    path = save(np.full((h, w, 3), 128, np.uint8), tmp_path / f"s_{w}x{h}.png")
    refused(path, path.name, f"{w}x{h}", f"at least {MIN_SIDE}")
    refused(np.zeros((h, w, 3), np.uint8), "array", f"at least {MIN_SIDE}")


def test_min_side_is_accepted(tmp_path):
    assert load_rgb(save(np.zeros((MIN_SIDE, 200, 3), np.uint8), tmp_path / "ok.png")).shape == (MIN_SIDE, 200, 3)


_MEASURE = """
import resource, sys, time
from afiqa.errors import ImageError
from afiqa.io.inputs import load_rgb
import numpy as np
load_rgb(np.zeros((40, 40, 3), np.uint8))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    out = repr(load_rgb(sys.argv[1], min_size=int(sys.argv[2])).shape)
except ImageError as e:
    out = "ImageError: " + str(e)
dt = time.perf_counter() - t0
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"{dt:.4f} {grown:.1f}")
print(out)
"""


def measure_load(path, min_size=0) -> tuple[float, float, str]:
    """(seconds, MB the peak RSS grew by, result) of load_rgb in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(min_size)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    first, out = p.stdout.strip().split("\n", 1)
    dt, grown = map(float, first.split())
    return dt, grown, out


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets afiqa's filter
def test_a_decompression_bomb_is_refused_from_the_header_fast_and_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (12000, 9000), 200).save(path)  # 108 MP, about 100 kB on disk
    assert path.stat().st_size < 1_000_000 and 12000 * 9000 > MAX_PIXELS
    dt, grown, out = measure_load(path)
    assert out.startswith("ImageError: ") and "bomb.png" in out and "12000x9000" in out, out
    assert "megapixels" in out and "\n" not in out
    assert dt < 1.0, dt
    assert grown < 200, f"peak memory grew by {grown:.0f} MB"
    t0 = time.perf_counter()
    refused(path, "12000x9000")  # in process too, with Pillow's own warning silenced
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("fmt", ["gif", "bmp", "png"])
def test_huge_dimensions_in_a_tiny_header_are_refused(tmp_path, fmt):
    big = 65535 if fmt != "bmp" else 60000
    if fmt == "gif":
        dims = big.to_bytes(2, "little") * 2
        data = b"GIF89a" + dims + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + dims + b"\x00\x02\x02\x44\x01\x00;"
    elif fmt == "bmp":
        info = (40).to_bytes(4, "little") + big.to_bytes(4, "little") + big.to_bytes(4, "little", signed=True)
        info += (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + bytes(24)
        data = b"BM" + (54).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little") + info
    else:
        import struct
        import zlib

        ihdr = struct.pack(">IIBBBBB", big, big, 8, 2, 0, 0, 0)
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
        idat = zlib.compress(b"\x00" * 64)
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path = tmp_path / f"huge.{fmt}"
    path.write_bytes(data)
    t0 = time.perf_counter()
    refused(path, path.name, "megapixels")
    assert time.perf_counter() - t0 < 1.0


def test_a_large_jpeg_is_decoded_at_reduced_size_in_bounded_memory(tmp_path):
    big = cv2.resize(scene(4, size=(300, 200)), (6000, 4000), interpolation=cv2.INTER_CUBIC)
    path = save(big, tmp_path / "large.jpg", quality=90)
    del big
    dt, grown, out = measure_load(path, min_size=512)
    assert out == "(1000, 1500, 3)", out  # 1/4 scale: the largest that keeps both sides >= 512
    assert grown < 100, f"peak memory grew by {grown:.0f} MB (a full decode needs over 200)"
    full = load_rgb(path)
    assert full.shape == (4000, 6000, 3)
    reduced = load_rgb(path, min_size=512)
    # Same picture at either scale: the model inputs barely differ.
    diff = np.abs(to_model_input(full, 512) - to_model_input(reduced, 512))
    assert diff.mean() < 2.0
    assert load_model_input(path, 512).shape == (512, 512, 3)


def test_draft_never_goes_below_the_requested_size(tmp_path):
    path = save(scene(5, size=(1100, 700)), tmp_path / "mid.jpg")
    a = load_rgb(path, min_size=512)
    assert min(a.shape[:2]) >= 512  # 700 < 2 * 512: decoded at full size
    b = load_rgb(path, min_size=300)
    assert b.shape == (350, 550, 3)


def test_camera_mpo_jpegs_are_read_and_drafted(tmp_path):
    frames = [Image.fromarray(scene(k, size=(1200, 800))) for k in (6, 7)]
    path = tmp_path / "camera.jpg"
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:])
    with Image.open(path) as im:
        assert im.format == "MPO"
    assert load_rgb(path, min_size=256).shape == (400, 600, 3)
    np.testing.assert_allclose(load_rgb(path).mean(), np.asarray(frames[0]).mean(), atol=2)


# -- modes -----------------------------------------------------------------------------------
def test_grayscale_and_1_bit_become_equal_rgb_channels(tmp_path, rgb):
    gray = Image.fromarray(rgb).convert("L")
    a = load_rgb(save(gray, tmp_path / "g.png"))
    assert a.shape == (*rgb.shape[:2], 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[..., 0], np.asarray(gray))
    np.testing.assert_array_equal(a[..., 0], a[..., 2])
    bw = load_rgb(save(gray.convert("1"), tmp_path / "bw.png"))
    assert set(np.unique(bw)) <= {0, 255}


def test_rgba_is_composited_over_white(tmp_path):
    a = np.zeros((40, 50, 4), np.uint8)
    a[..., 0] = 200
    a[:, :25, 3] = 255  # left half opaque red-ish, right half fully transparent
    a[:20, 25:, 3] = 0
    a[20:, 25:, 3] = 128  # bottom right half transparent
    out = load_rgb(save(a, tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[0, 49], [255, 255, 255])
    np.testing.assert_allclose(out[39, 49], [(200 * 128 + 255 * 127) / 255, 127, 127], atol=1)
    np.testing.assert_allclose(load_rgb(a), out, atol=1)  # arrays follow the same rule


@pytest.mark.parametrize("mode", ["LA", "La", "PA", "RGBa"])
def test_other_alpha_modes_are_composited_over_white(mode):
    a = np.zeros((40, 50, 4), np.uint8)
    a[..., :3] = 90
    a[:, :25, 3] = 255  # left: opaque; right: transparent; bottom right: half
    a[30:, 25:, 3] = 128
    rgba = Image.fromarray(a)
    if mode == "PA":
        img = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).convert("PA")
        img.putalpha(rgba.getchannel("A"))
    elif mode == "La":  # Pillow's RGBA -> La drops alpha; LA -> La premultiplies properly
        img = rgba.convert("LA").convert("La")
    else:
        img = rgba.convert(mode)
    out = load_rgb(img).astype(int)
    assert out.shape == (40, 50, 3)
    assert (out[:30, 30:] == 255).all(), "transparent pixels must be white"
    assert np.abs(out[:, :20] - 90).max() <= 1
    assert np.abs(out[35, 40] - (90 * 128 + 255 * 127) / 255).max() <= 2


def test_palette_images_with_and_without_transparency(tmp_path, rgb):
    p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    plain = load_rgb(save(p, tmp_path / "p.png"))
    np.testing.assert_array_equal(plain, np.asarray(p.convert("RGB")))
    key = int(np.asarray(p)[0, 0])
    for fmt in ("png", "gif"):
        out = load_rgb(save(p, tmp_path / f"t.{fmt}", transparency=key))
        hole = np.asarray(p) == key
        assert (out[hole] == 255).all() and hole.any()
        np.testing.assert_array_equal(out[~hole], plain[~hole])


def test_colour_key_transparency_of_rgb_and_gray_pngs_is_white(tmp_path, rgb):
    key = tuple(int(v) for v in rgb[0, 0])
    out = load_rgb(save(rgb, tmp_path / "k.png", transparency=key))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    out = load_rgb(save(gray, tmp_path / "kg.png", transparency=int(gray[0, 0])))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])


def test_cmyk_jpeg_with_adobe_inverted_data_decodes_like_rgb(tmp_path, rgb):
    path = save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert b"Adobe" in path.read_bytes()  # Adobe APP14 marker: inverted CMYK, as Photoshop writes
    out = load_rgb(path)
    ref = np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB")).astype(int)
    assert np.abs(out.astype(int) - ref).mean() < 6, "inverted CMYK read as a negative?"
    assert load_rgb(save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.tif")).shape == rgb.shape


def test_16_bit_grayscale_maps_0_to_65535_onto_0_to_255(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (40, 1))
    path = save(Image.fromarray(ramp), tmp_path / "g16.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    out = load_rgb(path)
    expected = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255
    # A dark 16-bit image stays dark: values are never mistaken for 8-bit.
    dark = save(Image.fromarray((ramp // 300).astype(np.uint16)), tmp_path / "dark16.png")
    assert load_rgb(dark).max() <= 1
    big_endian = Image.frombytes("I;16B", (256, 40), ramp.astype(">u2").tobytes())
    np.testing.assert_array_equal(load_rgb(big_endian)[..., 0], expected)
    np.testing.assert_array_equal(load_rgb(ramp.astype(">u2"))[..., 0], expected)


def test_16_bit_rgb_png_matches_its_8_bit_version(tmp_path, rgb):
    rgb16 = rgb.astype(np.uint16) * 257
    path = tmp_path / "c16.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    out = load_rgb(path)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 1


def test_float_and_32_bit_tiffs(tmp_path, rgb):
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    for mode in ("F", "I"):
        out = load_rgb(save(Image.fromarray(gray).convert(mode), tmp_path / f"{mode}.tif"))
        assert np.abs(out[..., 0].astype(int) - gray).max() <= 1
    unit = Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    assert np.abs(load_rgb(unit)[..., 0].astype(int) - gray).max() <= 1
    hot = Image.fromarray(np.full((40, 40), 1e6, np.float32), "F")
    refused(hot, "PIL image", "float")


# -- frames and orientation --------------------------------------------------------------------
def _frames():
    return [scene(k, size=(64, 48)) for k in (10, 11, 12)]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animated_and_multi_page_images_give_their_first_frame(tmp_path, fmt):
    frames = [Image.fromarray(f) for f in _frames()]
    ext = fmt.lower()
    path = tmp_path / f"anim.{ext}"
    kw = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, **kw)
    with Image.open(path) as im:
        assert getattr(im, "n_frames", 1) == 3
    alone = save(frames[0], tmp_path / f"first.{ext}", **kw)
    np.testing.assert_array_equal(load_rgb(path), load_rgb(alone))
    with Image.open(path) as im:  # a PIL image left at a later frame is rewound
        im.seek(2)
        np.testing.assert_array_equal(load_rgb(im), load_rgb(alone))


# How to store an upright image U so that a viewer applying EXIF orientation o shows U
# (written from the EXIF spec's row/column description, not from Pillow's table).
_STORE = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1],
    5: lambda u: u.transpose(1, 0, 2),
    6: lambda u: np.rot90(u, 1),
    7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),
    8: lambda u: np.rot90(u, -1),
}


@pytest.mark.parametrize("orientation", sorted(_STORE))
def test_exif_orientation_is_applied_exactly(tmp_path, rgb, orientation):
    stored = np.ascontiguousarray(_STORE[orientation](rgb))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / f"o{orientation}.png", exif=exif.tobytes())
    np.testing.assert_array_equal(load_rgb(path), rgb)
    np.testing.assert_array_equal(load_rgb(path.read_bytes()), rgb)


def test_exif_rotated_jpeg_decodes_upright(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = save(np.ascontiguousarray(np.rot90(rgb, 1)), tmp_path / "r.jpg", quality=98, exif=exif.tobytes())
    upright = save(rgb, tmp_path / "u.jpg", quality=98)
    a, b = load_rgb(rotated).astype(int), load_rgb(upright).astype(int)
    assert a.shape == b.shape == rgb.shape
    assert np.abs(a - b).mean() < 4
    assert np.abs(a - rgb[::-1, ::-1]).mean() > 20  # the comparison can tell orientations apart


def test_corrupt_exif_does_not_stop_decoding(tmp_path, rgb):
    path = save(rgb, tmp_path / "badexif.jpg", quality=95, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data"; the pixels are fine
        assert load_rgb(path).shape == rgb.shape


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fötö ñ.jpg", "写真 (1).png", "emoji 📷.webp"])
def test_non_ascii_file_names(tmp_path, rgb, name):
    path = save(rgb, tmp_path / name)
    assert load_rgb(path).shape == rgb.shape
    broken = tmp_path / ("broken " + name)
    broken.write_bytes(path.read_bytes()[:60])
    refused(broken, str(broken))


@pytest.mark.skipif(sys.platform != "linux", reason="such file names are a POSIX thing")
def test_a_file_name_with_a_newline_still_gives_a_one_line_message(tmp_path):
    path = tmp_path / "two\nlines\t.jpg"
    path.write_bytes(b"not a jpeg")
    assert "two\\nlines\\t.jpg" in refused(path)


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8 are a POSIX thing")
def test_file_names_that_are_not_utf8(tmp_path, rgb):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as f:
        f.write(jpeg_bytes(rgb))
    assert load_rgb(os.fsdecode(raw)).shape == rgb.shape
    assert load_rgb(raw.decode("utf-8", "surrogateescape")).shape == rgb.shape
    files = list_images([tmp_path])
    assert [os.fsencode(f) for f in files] == [raw]


# -- arrays and listing ----------------------------------------------------------------------------
def test_array_rules():
    assert load_rgb(np.zeros((40, 40), bool)).shape == (40, 40, 3)
    np.testing.assert_array_equal(load_rgb(np.full((40, 40), 65535, np.uint16)), 255)
    np.testing.assert_array_equal(load_rgb(np.full((40, 40, 3), 300, np.int32)), round(300 / 257))
    np.testing.assert_array_equal(load_rgb(np.full((40, 40, 1), 7, np.int64)), 7)
    refused(np.full((40, 40, 3), -1, np.int16), "array", "-1")
    refused(np.full((40, 40, 3), 2.0), "array", "[0, 1]")
    refused(np.full((40, 40, 3), np.nan), "array", "NaN")
    refused(np.zeros((3, 40, 40)), "array", "(3, 40, 40)")
    refused(np.zeros((0, 40, 3), np.uint8), "array")
    refused(np.zeros((40, 40, 3), np.complex64), "array", "complex")


def test_list_images_skips_hidden_files_but_keeps_named_ones(tmp_path, rgb):
    save(rgb, tmp_path / "a.jpg")
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / ".thumbs").mkdir()
    save(rgb, tmp_path / ".thumbs" / "t.jpg")
    (tmp_path / "sub").mkdir()
    save(rgb, tmp_path / "sub" / "B.PNG")
    (tmp_path / "notes.txt").write_text("x")
    assert list_images([tmp_path]) == [tmp_path / "a.jpg", tmp_path / "sub" / "B.PNG"]
    assert list_images([tmp_path / "notes.txt", tmp_path / "missing.jpg"]) == [
        tmp_path / "notes.txt", tmp_path / "missing.jpg"]


def test_every_refusal_is_one_line_naming_the_source(tmp_path):
    cases = {
        tmp_path / "empty.png": b"",
        tmp_path / "junk.jpg": b"junk" * 100,
        tmp_path / "cut.jpg": jpeg_bytes(scene(1))[:900],
    }
    for path, data in cases.items():
        path.write_bytes(data)
        assert refused(path).startswith(str(path) + ": ")
    assert refused(b"junk").startswith("image bytes: ")
    assert refused(Image.new("RGB", (4, 4))).startswith("PIL image: ")
    assert refused(np.zeros((4, 4, 3), np.uint8)).startswith("array: ")


# -- things in a folder that are not regular files ---------------------------------------------
def refused_without_blocking(path, *needles) -> str:
    """``refused`` in a thread: opening a FIFO for reading would block, so a hang fails."""
    import threading

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("msg", refused(path, *needles)), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # it opened the FIFO: let it go, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"load_rgb opened {path} and blocked")
    assert "msg" in out, "the refusal failed (see the thread's exception above)"
    return out["msg"]


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs and /dev/zero are POSIX")
def test_fifos_devices_folders_and_unreadable_folders_get_a_row_with_a_reason(tmp_path, rgb, monkeypatch):
    save(rgb, tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "y.jpg").mkdir()
    save(rgb, tmp_path / "y.jpg" / "inner.jpg")
    (tmp_path / "locked").mkdir()
    save(rgb, tmp_path / "locked" / "hidden_from_us.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    locked = str(tmp_path / "locked")
    (tmp_path / "locked").chmod(0)
    real_scandir = os.scandir

    def scandir(path="."):  # as root, mode 000 does not stop a listing: refuse it as it would for a user
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    try:
        files = list_images([tmp_path])
    finally:
        (tmp_path / "locked").chmod(0o755)
    names = [f.relative_to(tmp_path).as_posix() for f in files]
    assert names == ["a.jpg", "dangling.jpg", "locked", "pipe.jpg", "y.jpg", "y.jpg/inner.jpg", "zero.png"]
    assert load_rgb(tmp_path / "a.jpg").shape == rgb.shape
    start = time.monotonic()
    refused_without_blocking(tmp_path / "pipe.jpg", "pipe.jpg", "named pipe (FIFO)", "not read")
    refused_without_blocking(tmp_path / "zero.png", "zero.png", "a device", "not read")
    refused(tmp_path / "y.jpg", "y.jpg: a folder, not an image file")
    refused(tmp_path / "dangling.jpg", "a broken link")
    refused(tmp_path / "locked", "locked: a folder that could not be read (Permission denied)", "not scored")
    assert time.monotonic() - start < 5


# -- HEIC/HEIF (the iPhone's default) through pillow-heif ------------------------------------------
def test_heic_files_and_bytes_decode_like_the_photo(tmp_path, rgb):
    import pillow_heif

    heif = pillow_heif.from_pillow(Image.fromarray(rgb))
    heif.save(tmp_path / "IMG_0001.HEIC", quality=95)
    heif.save(tmp_path / "b.heif", quality=95)
    assert list_images([tmp_path]) == [tmp_path / "IMG_0001.HEIC", tmp_path / "b.heif"]
    for source in (tmp_path / "IMG_0001.HEIC", (tmp_path / "b.heif").read_bytes()):
        out = load_rgb(source)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        error = np.abs(out.astype(int) - rgb).mean()  # lossy (and 4:2:0), but the same picture, upright:
        assert error < 10 and error < np.abs(out[::-1].astype(int) - rgb).mean() / 3
    (tmp_path / "cut.heic").write_bytes((tmp_path / "b.heif").read_bytes()[:300])
    refused(tmp_path / "cut.heic", "cut.heic")


def test_heic_support_is_registered_lazily():
    code = "import sys, afiqa.io.inputs; print('pillow_heif' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "False"


def test_the_first_heic_files_decode_on_every_thread_at_once(tmp_path, rgb):
    """pillow-heif is registered when the first ISO media file comes; decode threads that
    meet HEIC files together all wait for it (a fresh process, where it is not yet done)."""
    import pillow_heif

    for k in range(4):
        pillow_heif.from_pillow(Image.fromarray(rgb)).save(tmp_path / f"{k}.heic", quality=90)
    code = (
        "import sys; from concurrent.futures import ThreadPoolExecutor; from afiqa.io.inputs import load_rgb\n"
        f"paths = [r'{tmp_path}/%d.heic' % k for k in range(4)]\n"
        "with ThreadPoolExecutor(4) as pool: shapes = list(pool.map(lambda p: load_rgb(p).shape, paths))\n"
        "print(shapes)\n"
    )
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count(str(rgb.shape)) == 4, r.stdout
