"""SIDE, MAD and their mask on analytic depth maps and hand-computed small cases."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape.eval import evaluation_mask, gt_depth_from_png, gt_depth_to_png, mad, side
from gan2shape.eval.scoring import score_depth, valid_render_mask
from gan2shape.fileio import save_image
from gan2shape.render import normals_from_depth


def test_side_hand_case_and_scale_invariance():
    gt = torch.tensor([[[1.0, 1.05], [0.95, 1.1]]])
    e = torch.tensor([[[0.0, 0.0], [0.1, 0.1]]])
    mask = torch.ones(1, 2, 2)
    assert side(gt * e.exp(), gt, mask).item() == pytest.approx(0.05, abs=1e-6)
    # masked: only the first row and one of the second -> e = 0, 0, 0.1
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    want = math.sqrt(((0 - 0.1 / 3) ** 2 * 2 + (0.1 - 0.1 / 3) ** 2) / 3)
    assert side(gt * e.exp(), gt, mask).item() == pytest.approx(want, abs=1e-6)
    torch.manual_seed(0)
    gt = 0.9 + 0.2 * torch.rand(3, 8, 8)
    pred = 0.9 + 0.2 * torch.rand(3, 8, 8)
    mask = (torch.rand(3, 8, 8) > 0.3).float()
    torch.testing.assert_close(side(1.7 * pred, gt, mask), side(pred, gt, mask))
    assert torch.all(side(2.0 * gt, gt, mask) < 1e-6)


def test_mad_hand_case():
    n1 = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
    t = math.radians(30)
    n2 = torch.tensor([math.sin(t), 0.0, math.cos(t)]).expand(1, 2, 2, 3).clone()
    n2[0, 1, 1] = torch.tensor([0.0, 0.0, 1.0])
    assert mad(n1, n2, torch.ones(1, 2, 2)).item() == pytest.approx(22.5, abs=1e-4)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert mad(n1, n2, mask).item() == pytest.approx(30.0, abs=1e-4)


def plane_depth(size, theta_deg, fov_deg=10.0):
    """Depth of the plane through (0, 0, 1) with normal (sin t, 0, cos t), seen by the
    pinhole camera of docs/method.md section 1 (fx = (S - 1) / 2 / tan(fov / 2))."""
    t = math.radians(theta_deg)
    f = (size - 1) / 2 / math.tan(math.radians(fov_deg) / 2)
    u = torch.arange(size, dtype=torch.float64).view(1, 1, size).expand(1, size, size)
    x = (u - (size - 1) / 2) / f
    return math.cos(t) / (math.sin(t) * x + math.cos(t))


def test_plane_vs_tilted_plane_has_the_tilt_as_mad():
    flat = torch.ones(1, 32, 32, dtype=torch.float64)
    tilted = plane_depth(32, 20.0)
    n_flat = normals_from_depth(flat)
    n_tilt = normals_from_depth(tilted)
    unit = lambda n: n / n.norm(dim=-1, keepdim=True)  # noqa: E731
    mask = torch.zeros(1, 32, 32, dtype=torch.float64)
    mask[:, 1:-1, 1:-1] = 1
    assert mad(unit(n_tilt), unit(n_flat), mask).item() == pytest.approx(20.0, abs=1e-3)


def test_release_normal_floor_on_a_plane_at_64px():
    # |tu x tv| = (2 d / f)^2 for a fronto-parallel plane at depth d = 1; the release divides
    # by that + 1e-7, so <n, n> = (L / (L + 1e-7))^2 and the MAD of a plane with itself is
    # acos of that: about 6.5 deg at 64 px (docs/method.md section 8).
    f = 31.5 / math.tan(math.radians(5))
    length = (2 / f) ** 2
    want = math.degrees(math.acos((length / (length + 1e-7)) ** 2))
    assert want == pytest.approx(6.5, abs=0.05)
    flat = torch.ones(1, 64, 64, dtype=torch.float64)
    gt = flat.clone()
    gt[:, :4] = 1.1  # some background so the ground-truth mask is not empty
    s = score_depth(flat, gt)
    assert s["mad_deg"].item() == pytest.approx(want, abs=1e-3)
    assert s["side"].item() == pytest.approx(0.0, abs=1e-9)
    clean = score_depth(flat, gt, unit_normals=True)
    assert clean["mad_deg"].item() == pytest.approx(0.0, abs=1e-2)


def erode_bruteforce(m):
    h, w = m.shape
    out = np.zeros_like(m)
    for i in range(h):
        for j in range(w):
            total = sum(m[y, x] for y in range(i - 1, i + 2) for x in range(j - 1, j + 2)
                        if 0 <= y < h and 0 <= x < w)
            out[i, j] = 1.0 if total / 9 > 0.99 else 0.0
    return out


def test_evaluation_mask_hand_case_and_brute_force():
    gt = torch.ones(1, 6, 6)
    gt[0, 0, 0] = 1.1
    mask = evaluation_mask(gt, torch.ones(1, 6, 6))
    want = torch.zeros(1, 6, 6)
    want[0, 1:5, 1:5] = 1
    want[0, 1, 1] = 0
    torch.testing.assert_close(mask, want)
    rng = np.random.default_rng(0)
    gt = 0.9 + 0.2 * rng.random((9, 9))
    gt[rng.random((9, 9)) < 0.2] = 1.1
    valid = (rng.random((9, 9)) > 0.1).astype(np.float64)
    want = erode_bruteforce((gt < gt.max()).astype(np.float64)) * erode_bruteforce(valid)
    got = evaluation_mask(torch.from_numpy(gt)[None], torch.from_numpy(valid)[None])
    np.testing.assert_array_equal(got[0].numpy(), want)


def test_valid_render_mask():
    d = torch.tensor([[[1.0, 1.2, 1.19]]])
    torch.testing.assert_close(valid_render_mask(d), torch.tensor([[[1.0, 0.0, 1.0]]]))


def test_gt_depth_png_convention_and_round_trip(tmp_path):
    g8 = np.array([[0, 255], [128, 64]], np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    d = gt_depth_from_png(tmp_path / "g8.png")
    want = (1 - g8 / 255.0) * 0.2 + 0.9  # rescale((1 - g) * 2 - 1): white is near (0.9)
    np.testing.assert_allclose(d.numpy(), want, atol=1e-6)
    rng = np.random.default_rng(1)
    depth = 0.9 + 0.2 * rng.random((16, 16))
    save_image(gt_depth_to_png(depth), tmp_path / "g16.png")
    back = gt_depth_from_png(tmp_path / "g16.png").numpy()
    np.testing.assert_allclose(back, depth, atol=0.2 / 65535 + 1e-7)
    # crop, then resize (bilinear with PIL's antialiasing, as the release's loader): the
    # outer output columns of a left/right split lie beyond the filter's reach of the edge
    big = np.kron(np.array([[0.0, 1.0]]), np.ones((16, 8)))
    save_image(gt_depth_to_png(big * 0.2 + 0.9), tmp_path / "big.png")
    small = gt_depth_from_png(tmp_path / "big.png", size=4).numpy()
    assert small.shape == (4, 4)
    np.testing.assert_allclose(small[:, 0], 0.9, atol=1e-4)
    np.testing.assert_allclose(small[:, 3], 1.1, atol=1e-4)
    cropped = gt_depth_from_png(tmp_path / "big.png", crop=4).numpy()
    np.testing.assert_allclose(cropped, big[6:10, 6:10] * 0.2 + 0.9, atol=1e-4)
    whole = gt_depth_from_png(tmp_path / "big.png", crop=170).numpy()  # larger crop: no-op
    np.testing.assert_allclose(whole, big * 0.2 + 0.9, atol=1e-4)
    # an 8-bit map resized stays on 8-bit levels, as PIL's resize of the release's 'L' image
    ramp = (np.arange(16)[None, :] * 17 + np.zeros((16, 1))).astype(np.uint8)
    Image.fromarray(ramp).save(tmp_path / "ramp8.png")
    g = 1 - (gt_depth_from_png(tmp_path / "ramp8.png", size=6).double().numpy() - 0.9) / 0.2
    want = np.asarray(Image.fromarray(ramp).resize((6, 6), Image.BILINEAR), np.float64) / 255
    np.testing.assert_allclose(g, want, atol=1e-6)


def test_baselines_by_hand():
    from gan2shape.eval.scoring import average_depth_baseline, constant_depth_baseline

    gts = torch.tensor([[[1.0, 0.9]], [[1.1, 1.0]]])
    torch.testing.assert_close(average_depth_baseline(gts),
                               torch.tensor([[[1.05, 0.95]], [[1.05, 0.95]]]))
    torch.testing.assert_close(constant_depth_baseline(gts, 1.0), torch.ones(2, 1, 2))
