"""Image preprocessing: decoding, geometry, value mapping and its inverse, display helpers."""
from types import SimpleNamespace

import _need as need
import numpy as np
import pytest
from PIL import Image

from tinygrad_explain.data import image
from tinygrad_explain.data.imagenet import (
    CAFFE_MEAN_BGR,
    IMAGENET_CLASSES,
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    class_name,
)


def stand_in(input_shape=(3, 224, 224), **pre):
    """Only .input_shape and .preprocessing are used by tinygrad_explain.data.image."""
    return SimpleNamespace(input_shape=input_shape, preprocessing=pre)


TV = stand_in((3, 224, 224), mean=list(TORCHVISION_MEAN), std=list(TORCHVISION_STD),
              channel_order="RGB", pixel_scale=1.0, resize=256, crop=224)
CAFFE = stand_in((3, 227, 227), mean=list(CAFFE_MEAN_BGR), std=[1.0, 1.0, 1.0],
                 channel_order="BGR", pixel_scale=255.0, resize=256, crop=227)
PLAIN = stand_in((3, 224, 224), mean=list(TORCHVISION_MEAN), std=list(TORCHVISION_STD),
                 channel_order="RGB", pixel_scale=1.0, resize=0, crop=0)


def rand_img(h, w, c=3, seed=0):
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_imagenet_classes():
    assert len(IMAGENET_CLASSES) == 1000
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[2] == "great white shark"
    assert class_name(281) == "tabby" and IMAGENET_CLASSES[-1] == "toilet tissue"
    assert all(n and n == n.strip() for n in IMAGENET_CLASSES)


def test_roundtrip_input_sized_image_is_exact():
    img = rand_img(224, 224)
    x = image.load(img, PLAIN)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(image.to_display(x, PLAIN), img)
    np.testing.assert_array_equal(image.to_display(x[0], PLAIN), img)   # (C, H, W) accepted
    expected = (img[0, 0] / 255.0 - np.array(TORCHVISION_MEAN)) / np.array(TORCHVISION_STD)
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-5)


def test_torchvision_resize_256_crop_224_is_the_centre_of_a_256_image():
    img = rand_img(256, 256)
    x = image.load(img, TV)
    assert x.shape == (1, 3, 224, 224)
    np.testing.assert_array_equal(image.to_display(x, TV), img[16:240, 16:240])


def test_caffe_bgr_255_mean_and_crop():
    img = rand_img(256, 256, seed=1)
    x = image.load(img, CAFFE)
    assert x.shape == (1, 3, 227, 227)
    top = int(round((256 - 227) / 2.0))           # torchvision's CenterCrop rounding
    crop = img[top:top + 227, top:top + 227].astype(np.float64)
    np.testing.assert_allclose(x[0, 0], crop[:, :, 2] - CAFFE_MEAN_BGR[0], atol=1e-4)   # B
    np.testing.assert_allclose(x[0, 2], crop[:, :, 0] - CAFFE_MEAN_BGR[2], atol=1e-4)   # R
    np.testing.assert_array_equal(image.to_display(x, CAFFE), crop.astype(np.uint8))


def test_non_square_matches_torchvision_resize_then_centre_crop():
    img = rand_img(300, 400, seed=2)
    x = image.load(img, TV)
    # torchvision Resize(256): shorter side 256, longer int(256 * 400 / 300) = 341 (PIL bilinear)
    ref = np.asarray(Image.fromarray(img).resize((341, 256), Image.BILINEAR), np.float64)
    top, left = int(round((256 - 224) / 2)), int(round((341 - 224) / 2))
    ref = ref[top:top + 224, left:left + 224] / 255.0
    ref = ((ref - TORCHVISION_MEAN) / TORCHVISION_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(x[0], ref, atol=1e-5)
    tall = image.load(rand_img(500, 240, seed=3), TV)            # portrait works too
    assert tall.shape == (1, 3, 224, 224)


def test_no_resize_warps_to_input_size():
    m = stand_in((3, 20, 30), resize=0, crop=0)
    x = image.load(rand_img(50, 50), m)
    assert x.shape == (1, 3, 20, 30)
    assert x.min() >= 0 and x.max() <= 1           # defaults: mean 0, std 1, [0, 1]


def test_small_image_is_upscaled_then_cropped():
    x = image.load(rand_img(10, 16), TV)
    assert x.shape == (1, 3, 224, 224)


def test_grayscale_inputs_become_three_equal_channels(tmp_path):
    g = rand_img(224, 224, c=None)
    for src in (g, g[:, :, None], Image.fromarray(g, "L")):
        out = image.to_display(image.load(src, PLAIN), PLAIN)
        np.testing.assert_array_equal(out, np.repeat(g[:, :, None], 3, axis=2))
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    out = image.to_display(image.load(p, PLAIN), PLAIN)
    np.testing.assert_array_equal(out[:, :, 0], g)
    # 16-bit greyscale is scaled to 8 bits, not clipped
    g16 = (g.astype(np.uint16) * 257)
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    out = image.to_display(image.load(p16, PLAIN), PLAIN)
    assert np.abs(out[:, :, 0].astype(int) - g).max() <= 1


def test_rgba_and_palette_drop_alpha(tmp_path):
    rgb = rand_img(224, 224)
    alpha = rand_img(224, 224, c=None, seed=9)
    rgba = np.dstack([rgb, alpha])
    np.testing.assert_array_equal(image.to_display(image.load(rgba, PLAIN), PLAIN), rgb)
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    np.testing.assert_array_equal(image.to_display(image.load(str(p), PLAIN), PLAIN), rgb)
    pal = Image.fromarray(rgb).quantize(16)
    x = image.load(pal, PLAIN)
    np.testing.assert_array_equal(image.to_display(x, PLAIN), np.asarray(pal.convert("RGB")))


def test_jpeg_file_and_exif_orientation(tmp_path):
    img = rand_img(40, 60)
    p = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6                               # "rotate 90 CW to display"
    Image.fromarray(img).save(p, quality=95, exif=exif)
    upright = image.load_pil(p)
    assert upright.size == (40, 60)                # width/height swapped: turned upright
    assert image.load(p, TV).shape == (1, 3, 224, 224)


def test_one_channel_model():
    m = stand_in((1, 28, 28), mean=[0.5], std=[0.25], resize=0, crop=0)
    x = image.load(rand_img(56, 56), m)
    assert x.shape == (1, 1, 28, 28)
    disp = image.to_display(x, m)
    assert disp.shape == (28, 28, 3) and (disp[:, :, 0] == disp[:, :, 2]).all()


def test_bad_files_raise_value_error_naming_the_file(tmp_path):
    txt = tmp_path / "notes.jpg"
    txt.write_text("this is not an image")
    with pytest.raises(ValueError, match="notes.jpg"):
        image.load(txt, TV)
    with pytest.raises(ValueError, match="missing.png"):
        image.load(tmp_path / "missing.png", TV)
    with pytest.raises(ValueError, match="directory"):
        image.load(tmp_path, TV)
    good = tmp_path / "cut.png"
    Image.fromarray(rand_img(64, 64)).save(good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        image.load(good, TV)
    with pytest.raises(ValueError, match="uint8"):
        image.load(rand_img(8, 8).astype(np.float32), TV)
    with pytest.raises(ValueError, match="shape"):
        image.load(np.zeros((8, 8, 2), np.uint8), TV)
    with pytest.raises(TypeError):
        image.load(12345, TV)


def test_inconsistent_preprocessing_is_reported():
    m = stand_in((3, 224, 224), resize=256, crop=227)
    with pytest.raises(ValueError, match="227x227.*224x224"):
        image.load(rand_img(256, 256), m)
    with pytest.raises(ValueError, match="channel_order"):
        image.load(rand_img(8, 8), stand_in((3, 8, 8), channel_order="XYZ"))


def test_preprocessing_from_real_model_file(tmp_path):
    te = need.module("tinygrad_explain")
    model = te.models.alexnet("torchvision", num_classes=3)
    path = tmp_path / "m.h5"
    te.save_model(model, path, class_names=["a", "b", "c"], mean=TORCHVISION_MEAN,
                  std=TORCHVISION_STD, channel_order="RGB", pixel_scale=1.0, resize=256, crop=224)
    loaded = te.load_model(path)
    img = rand_img(256, 256, seed=4)
    x = image.load(img, loaded)
    loaded.check_input(x)                          # the engine accepts it as is
    np.testing.assert_array_equal(image.to_display(x, loaded), img[16:240, 16:240])
    np.testing.assert_array_equal(x, image.load(img, TV))


def test_to_display_clips_and_accepts_tensors():
    te = need.module("tinygrad_explain")
    sign = np.where(rand_img(224, 224).transpose(2, 0, 1)[None] > 127, 1.0, -1.0)
    x = (sign * 100).astype(np.float32)                   # far outside the image range
    out = image.to_display(te.Tensor(x), PLAIN)
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
    assert set(np.unique(out)) <= {0, 255}
    with pytest.raises(ValueError, match="batch"):
        image.to_display(np.zeros((2, 3, 4, 4), np.float32), PLAIN)


def test_normalize_display_modes():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((1, 3, 16, 12))
    mm = image.normalize_display(g)
    assert mm.shape == (16, 12, 3) and mm.dtype == np.uint8
    assert mm.min() == 0 and mm.max() == 255
    hwc = g[0].transpose(1, 2, 0)
    np.testing.assert_array_equal(image.normalize_display(hwc), mm)         # layout-agnostic
    s = image.normalize_display(g, "signed")
    assert s[np.unravel_index(np.abs(hwc).argmax(), hwc.shape)] in (1, 255)
    np.testing.assert_array_equal(image.normalize_display(np.zeros((3, 4, 4)), "signed"),
                                  np.full((4, 4, 3), 128, np.uint8))
    sal = image.normalize_display(g, "abs")
    assert sal.shape == (16, 12) and sal.max() == 255
    np.testing.assert_array_equal(np.argmax(sal), np.argmax(np.abs(hwc).max(axis=2)))
    assert (image.normalize_display(np.ones((5, 5))) == 0).all()           # constant -> 0
    # percentile clipping: one huge outlier no longer blacks out the rest
    spiky = rng.random((32, 32))
    spiky[0, 0] = 1e6
    assert image.normalize_display(spiky, "abs")[1:, 1:].mean() < 1
    assert image.normalize_display(spiky, "abs", percentile=99)[1:, 1:].mean() > 50
    with pytest.raises(ValueError, match="mode"):
        image.normalize_display(g, "nope")
    with pytest.raises(ValueError, match="NaN"):
        image.normalize_display(np.full((2, 2), np.nan))
