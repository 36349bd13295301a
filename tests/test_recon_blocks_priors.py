"""Masks, the ellipsoid prior (docs/method.md section 8 on known boxes), view/light priors."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape.errors import UserError
from gan2shape.recon import priors

NEAR, FAR, RADIUS = 0.91, 1.02, 0.4
T = math.sqrt(RADIUS ** 2 - (RADIUS - (FAR - NEAR)) ** 2)


def box(h, top, bottom, left, right):
    m = torch.zeros(h, h)
    m[top:bottom + 1, left:right + 1] = 1
    return m


def test_ellipsoid_on_a_square_box_by_hand():
    d = priors.ellipsoid_prior(box(64, 22, 42, 20, 40))  # ratio 1, centre (32, 30)
    assert d[32, 30].item() == pytest.approx(NEAR, abs=1e-6)
    # on the rim: radius - (radius - (far - near)) + near = far
    assert d[32, 40].item() == pytest.approx(FAR, abs=1e-6)
    # half-way out: radius - sqrt(radius^2 - (t / 2)^2) + near, t^2 = 0.16 - 0.29^2 = 0.0759
    assert d[32, 35].item() == pytest.approx(0.4 - math.sqrt(0.16 - 0.0759 / 4) + 0.91, abs=1e-6)
    assert d[32, 41].item() == pytest.approx(FAR)  # outside
    assert d[0, 0].item() == pytest.approx(FAR)
    assert d.min().item() == pytest.approx(NEAR, abs=1e-6)


def test_ellipsoid_rows_stretch_about_the_image_centre_row():
    # Box rows 10..50 (height 40), cols 20..40 (width 20): ratio 2, box centre row 30.
    # Rows map as i' = (i - 32) / 2 + 32, so the apex (i' = 30) lies at row 28, not 30.
    d = priors.ellipsoid_prior(box(64, 10, 50, 20, 40))
    assert d[28, 30].item() == pytest.approx(NEAR, abs=1e-6)
    assert d[30, 30].item() > NEAR + 1e-4
    # vertical extent: |i' - 30| <= 10 <=> 8 <= i <= 48 on the centre column
    inside = (d[:, 30] < FAR - 1e-9).nonzero().flatten()
    assert inside.min().item() == 9 and inside.max().item() == 47  # rim rows equal far


def test_ellipsoid_category_tweaks():
    m = box(64, 16, 40, 16, 40)

    def extent(d):
        rows = (d < FAR - 1e-9).any(1).nonzero().flatten()
        cols = (d < FAR - 1e-9).any(0).nonzero().flatten()
        return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()

    plain = extent(priors.ellipsoid_prior(m))
    face = extent(priors.ellipsoid_prior(m, "face"))
    synface = extent(priors.ellipsoid_prior(m, "synface"))
    car = extent(priors.ellipsoid_prior(m, "car"))
    church = extent(priors.ellipsoid_prior(m, "church"))
    assert plain == (17, 39, 17, 39)
    # face: sides pulled in by 24/12 = 2 px -> radius 10 around col 28
    assert face[2:] == (19, 37)
    assert face[1] > plain[1]  # bottom goes to the last row
    assert synface[0] < plain[0] and synface[2:] == plain[2:]
    assert car == church and car[1] > plain[1] and car[2:] == plain[2:]
    church_far = priors.ellipsoid_prior(m, "church", far=1.0)
    assert church_far.max().item() == pytest.approx(1.0)


def test_ellipsoid_empty_mask_is_an_error():
    with pytest.raises(UserError):
        priors.ellipsoid_prior(torch.zeros(8, 8))


def test_fit_depth_to_prior_lowers_the_loss():
    torch.manual_seed(0)
    class FreeDepth(torch.nn.Module):  # a stand-in for netD: one raw value per pixel
        def __init__(self):
            super().__init__()
            self.raw = torch.nn.Parameter(torch.zeros(1, 1, 32, 32))

        def forward(self, image):
            return self.raw.expand(image.shape[0], 1, 32, 32)

    net = FreeDepth()
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    prior = priors.ellipsoid_prior(box(32, 8, 24, 8, 24))
    first = []
    last = priors.fit_depth_to_prior(net, image, prior, steps=60, lr=0.05, weight_decay=0.0,
                                     progress=lambda i, v: first.append(v))
    assert len(first) == 60 and last < 0.1 * first[0]


def test_load_mask(tmp_path):
    arr = np.zeros((32, 32), np.uint8)
    arr[8:24, 8:24] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    m = priors.load_mask(tmp_path / "m.png", 16)
    assert m.shape == (1, 1, 16, 16)
    assert m[0, 0, 4:12, 4:12].min() == 1 and m[0, 0, :4].max() == 0
    assert priors.load_mask(tmp_path / "m.png").shape == (1, 1, 32, 32)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: only the alpha says where the object is
    rgba[4:12, 20:28, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    cut = priors.load_mask(tmp_path / "cutout.png", 32)
    assert cut[0, 0, 4:12, 20:28].min() == 1 and cut.sum() == 64
    tall = np.zeros((32, 16), np.uint8)  # cropped to its centre square, as images are
    tall[8:24, 4:8] = 255
    tall[:8] = tall[24:] = 255  # outside the centre square: dropped
    Image.fromarray(tall).save(tmp_path / "tall.png")
    assert torch.equal(priors.load_mask(tmp_path / "tall.png")[0, 0],
                       torch.from_numpy(tall[8:24] / 255).float())
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(UserError, match="no object"):
        priors.load_mask(tmp_path / "empty.png", 16)
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(UserError, match="not a readable image"):
        priors.load_mask(tmp_path / "bad.png", 16)
    with pytest.raises(UserError, match="not found"):
        priors.load_mask(tmp_path / "missing.png", 16)


def test_foreground_mask_finds_a_disk_on_a_plain_background():
    torch.manual_seed(0)
    s = 64
    i, j = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    disk = ((i - 34) ** 2 + (j - 30) ** 2 <= 18 ** 2).float()
    image = torch.empty(1, 3, s, s)
    image[0, 0] = 0.6 * disk - 0.5 * (1 - disk)
    image[0, 1] = -0.2 * disk + 0.3 * (1 - disk)
    image[0, 2] = 0.1 * disk + 0.7 * (1 - disk)
    image += 0.05 * torch.randn_like(image)
    mask = priors.make_mask("foreground", image, "car")[0, 0] >= priors.MASK_THRESHOLD
    iou = (mask & disk.bool()).sum() / (mask | disk.bool()).sum()
    assert iou > 0.85


def test_make_mask_methods():
    image = torch.zeros(2, 3, 32, 32)
    box_m = priors.make_mask("box", image, "face")
    assert box_m.shape == (2, 1, 32, 32) and 0 < box_m.mean() < 1
    seg = priors.make_mask("segmenter", image, "car", segmenter=lambda x: torch.ones(2, 1, 32, 32))
    assert seg.min() == 1
    with pytest.raises(UserError):
        priors.make_mask("segmenter", image, "car", segmenter=lambda x: torch.ones(2, 32, 32))
    with pytest.raises(UserError):
        priors.make_mask("file", image, "car")
    with pytest.raises(UserError):
        priors.make_mask("parsing", image, "car")
    # a featureless image has no foreground: falls back to the box
    fg = priors.make_mask("foreground", image, "face")
    assert (fg >= priors.MASK_THRESHOLD).any()


def test_view_light_prior_load_and_sample(tmp_path):
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(1)) * 0.2
    view = {"mean": torch.tensor([0.1, -0.2, 0.0, 0.05, 0.0, 0.0]),
            "cov": a @ a.T + 0.01 * torch.eye(6)}
    light = {"mean": torch.tensor([0.2, 0.1, 0.0, 0.3]),
             "cov": torch.diag(torch.tensor([.01, .02, .03, .04]))}
    torch.save(view, tmp_path / "view.pth")
    torch.save(light, tmp_path / "light.pth")
    p = priors.ViewLightPrior.load(tmp_path / "view.pth", tmp_path / "light.pth", view_scale=1.2)
    g = torch.Generator().manual_seed(0)
    v = p.sample_views(40000, g).double()
    scale = torch.tensor([1, 1.2, 1, 1, 1, 1], dtype=torch.float64)
    torch.testing.assert_close(v.mean(0), view["mean"].double() * scale, atol=0.01, rtol=0)
    want_cov = view["cov"].double() * scale[:, None] * scale[None, :]
    torch.testing.assert_close(torch.cov(v.T), want_cov, atol=0.01, rtol=0.05)
    lt = p.sample_lights(40000, g).double()
    torch.testing.assert_close(lt.var(0), torch.tensor([.01, .02, .03, .04], dtype=torch.float64),
                               atol=0.002, rtol=0)
    torch.testing.assert_close(p.view_mean.float(), view["mean"])
    d = priors.ViewLightPrior.load()
    assert d.sample_views(3).shape == (3, 6) and torch.all(d.light_mean == 0)


def test_view_light_prior_errors(tmp_path):
    torch.save({"mean": torch.zeros(5), "cov": torch.eye(5)}, tmp_path / "v5.pth")
    torch.save({"mu": torch.zeros(6)}, tmp_path / "nokey.pth")
    torch.save({"mean": torch.zeros(6), "cov": -torch.eye(6)}, tmp_path / "neg.pth")
    for name, pat in [("v5.pth", "expected"), ("nokey.pth", "'mean' and 'cov'"),
                      ("neg.pth", "positive definite"), ("missing.pth", "not found")]:
        with pytest.raises(UserError, match=pat):
            priors.ViewLightPrior.load(view_path=tmp_path / name)


def test_random_light_follows_the_release_ranges():
    g = torch.Generator().manual_seed(0)
    rl = (-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6)
    light = priors.sample_random_light(5000, torch.tensor(0.4), torch.tensor(0.5), rl, g)
    d = light.direction
    torch.testing.assert_close(d.norm(dim=1), torch.ones(5000))
    x, y = d[:, 0] / d[:, 2], d[:, 1] / d[:, 2]
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.95 and x.max() > 0.95
    assert y.min() >= -0.2 - 1e-6 and y.max() <= 0.8 + 1e-6
    jitter = light.diffuse - 0.5
    assert jitter.min() >= -0.1 - 1e-6 and jitter.max() <= 0.6 + 1e-6
    torch.testing.assert_close(light.ambient, 0.4 - 0.6 * jitter)
