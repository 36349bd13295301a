"""Procedural heads and `make-data`: analytic depth, symmetry, determinism, file round trips."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape import cli
from gan2shape.data import heads, scenes
from gan2shape.eval.metrics import gt_depth_from_png
from gan2shape.recon.priors import ViewLightPrior

SIZE = 48


def _rays(size):
    """Pixel rays (S, S, 3) = (xn, yn, 1) from the camera definition of docs/method.md section 1."""
    focal = (size - 1) / 2 / math.tan(math.radians(10.0) / 2)
    c = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / focal
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy, torch.ones_like(xx)], -1)


def _rotation(rx, ry, rz):
    """R = Rz Ry Rx, written out from the elementary rotations."""
    cx, sx, cy, sy, cz, sz = (math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry),
                              math.cos(rz), math.sin(rz))
    rot_x = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    rot_y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rot_z = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return rot_z @ rot_y @ rot_x


def _analytic_view_depth(p, k, view, size):
    """Depth seen from `view` of head k's bare surface: the ellipsoid's front half
    (canonical z <= centre depth) and the background plane z = centre depth around it.

    The view maps canonical points q to R (q - c) + c + t with c = (0, 0, 1). A view-pixel
    ray lam * r is the canonical ray o + lam * R^T r with o = R^T (-t - c) + c, and lam is
    the depth in the view. Returns (depth (S, S), normalised ellipsoid radius at the hit
    (S, S), inf where the plane is hit) in float64.
    """
    a = float(p["half_width"][k])
    axes = torch.tensor([a, a * float(p["aspect"][k]), float(p["depth_axis"][k])],
                        dtype=torch.float64)
    z0 = float(p["centre_depth"][k])
    centre = torch.tensor([0.0, float(p["centre_y"][k]), z0], dtype=torch.float64)
    rot = _rotation(*view[:3])
    pivot = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    trans = torch.tensor(view[3:], dtype=torch.float64)
    origin = rot.T @ (-trans - pivot) + pivot
    dirs = _rays(size) @ rot  # rows: R^T r
    # Ellipsoid: |(o + lam d - centre) / axes|^2 = 1, sphere intersection in scaled space.
    o_s, d_s = (origin - centre) / axes, dirs / axes
    qa = (d_s * d_s).sum(-1)
    qb = 2 * (d_s * o_s).sum(-1)
    qc = (o_s * o_s).sum() - 1
    disc = qb**2 - 4 * qa * qc
    lam_e = (-qb - disc.clamp(min=0).sqrt()) / (2 * qa)
    hit_e = (disc > 0) & (origin[2] + lam_e * dirs[..., 2] <= z0)
    # Plane z = z0 outside the ellipse footprint.
    lam_p = (z0 - origin[2]) / dirs[..., 2]
    q = origin + lam_p[..., None] * dirs
    outside = (((q - centre) / axes)[..., :2] ** 2).sum(-1) >= 1
    depth = torch.where(hit_e, lam_e, torch.where(outside, lam_p, torch.full_like(lam_p, 9.0)))
    hit_point = origin + lam_e[..., None] * dirs
    radius = (((hit_point - centre) / axes)[..., :2] ** 2).sum(-1).sqrt()
    return depth, torch.where(hit_e, radius, torch.full_like(radius, math.inf))


def _batch(n, seed=11):
    return scenes.sample_uniforms(seed, range(n))


def test_bare_canonical_depth_is_the_ray_ellipsoid_intersection():
    u = _batch(3)
    p = scenes.head_parameters(u)
    depth, albedo, mask = heads.canonical_heads(u[:, :len(heads.HEAD_RANGES)].float(), SIZE,
                                                features=False)
    for k in range(3):
        ref, radius = _analytic_view_depth(p, k, [0.0] * 6, SIZE)
        assert torch.allclose(depth[k].double(), ref, atol=2e-6)
        # The mask covers the footprint, anti-aliased over about one pixel.
        inside, outside = radius < 0.9, radius.isinf()
        assert (mask[k][inside] == 1).all() and (mask[k][outside] < 0.5).all()
        assert inside.float().mean() > 0.3  # the head fills much of the frame


def test_frontal_ground_truth_depth_matches_the_ellipsoid():
    u = _batch(2)
    p = scenes.head_parameters(u)
    out = scenes.render_batch(u, torch.zeros(2, 6), scenes.lights_raw(u), SIZE, features=False)
    for k in range(2):
        ref, radius = _analytic_view_depth(p, k, [0.0] * 6, SIZE)
        head = radius < 0.95
        assert torch.allclose(out["depth"][k].double()[head], ref[head], atol=2e-6)
        assert (out["depth"][k][radius.isinf()] == 1.1).all()


@pytest.mark.parametrize("view_deg", [(10.0, 25.0, 0.0), (-12.0, -20.0, 3.0)])
def test_rotated_ground_truth_depth_matches_the_rotated_ellipsoid(view_deg):
    u = _batch(2)
    p = scenes.head_parameters(u)
    raw = torch.tensor([[d / 60.0 for d in view_deg] + [0.02, -0.01, 0.0]] * 2)
    view = scenes.view_from_raw(raw)[0].double().tolist()
    out = scenes.render_batch(u, raw, scenes.lights_raw(u), SIZE, features=False)
    for k in range(2):
        ref, radius = _analytic_view_depth(p, k, view, SIZE)
        # Away from the steep rim the grid mesh interpolates the smooth surface closely
        # (the error is the mesh's, O(pixel^2): 4x smaller at twice the size; a wrong
        # rotation sign gives 0.14).
        smooth = radius < 0.7
        err = (out["depth"][k].double() - ref)[smooth].abs()
        assert smooth.sum() > 300 and err.max() < 1e-3 and err.mean() < 1.5e-4
        # Far from the head the ground truth is background.
        assert (out["depth"][k][ref > 9.0 - 1e-9] == 1.1).all()


def test_canonical_heads_are_left_right_symmetric():
    u = _batch(4)[:, :len(heads.HEAD_RANGES)].float()
    depth, albedo, mask = heads.canonical_heads(u, SIZE)
    assert torch.allclose(depth, depth.flip(-1), atol=1e-6)
    assert torch.allclose(albedo, albedo.flip(-1), atol=1e-6)
    assert torch.allclose(mask, mask.flip(-1), atol=1e-6)
    # ... and the features are really there (not a bare ellipsoid).
    bare, _, _ = heads.canonical_heads(u, SIZE, features=False)
    assert (bare - depth).max() > 0.008  # the nose
    assert depth.min() >= 0.9 and depth.max() <= 1.1


def test_samples_depend_only_on_seed_and_index():
    full = scenes.render_scenes(5, range(6), SIZE)
    some = scenes.render_scenes(5, [4, 1], SIZE)
    for key in ("image", "depth", "view", "light_raw"):
        assert torch.equal(some[key], full[key][[4, 1]])
    other = scenes.render_scenes(6, [4, 1], SIZE)
    assert not torch.allclose(other["image"], some["image"])


def test_views_and_lights_stay_in_documented_ranges():
    u = _batch(500, seed=2)
    view = scenes.view_from_raw(scenes.views_raw(u))
    deg = torch.rad2deg(view[:, :3]).abs().max(0).values
    assert deg[0] <= 15 and deg[1] <= 30 and deg[2] <= 3 and deg[1] > 25
    assert view[:, 3:5].abs().max() <= 0.0075 and (view[:, 5] == 0).all()
    assert view[:, 3:5].abs().max() > 0.007
    assert scenes.view_from_raw(scenes.views_raw(u, 0.004))[:, 3:5].abs().max() <= 0.004
    ambient, diffuse, direction = scenes.light_from_raw(scenes.lights_raw(u))
    assert ambient.min() >= 0.2 and ambient.max() <= 0.5
    assert diffuse.min() >= 0.45 and diffuse.max() <= 0.75
    assert torch.allclose(direction.norm(dim=1), torch.ones(500, dtype=direction.dtype))


def test_priors_are_the_moments_of_the_sampled_views_and_lights():
    n = 4000
    u = _batch(n, seed=3)
    for raw, prior in ((scenes.views_raw(u), scenes.view_prior()),
                       (scenes.views_raw(u, 0.0075), scenes.view_prior(0.0075)),
                       (scenes.lights_raw(u), scenes.light_prior())):
        mean, cov = raw.mean(0), torch.cov(raw.T)
        std = cov.diagonal().sqrt()
        # Within 4 standard errors (tz is constant: its prior variance is a 1e-6 floor).
        assert ((mean - prior["mean"]).abs() <= 4 * std / math.sqrt(n) + 1e-9).all()
        tol = 4 * torch.outer(std, std) / math.sqrt(n) + 2e-6
        assert ((cov - prior["cov"].double()).abs() <= tol).all()
        assert (prior["cov"].diagonal() > 0).all()
        torch.distributions.MultivariateNormal(prior["mean"], prior["cov"])  # positive definite


def _decode_depth_png(path):
    """Release convention: g in [0, 1] -> depth = 0.9 + 0.2 * (1 - g) (near is bright)."""
    g = np.asarray(Image.open(path)).astype(np.float64) / 65535
    return 0.9 + 0.2 * (1 - g)


def test_make_data_files_round_trip_and_resume(tmp_path, capsys):
    out = tmp_path / "data"
    assert cli.main(["make-data", "--out", str(out), "-n", "3", "--seed", "9",
                     "--size", str(SIZE)]) == 0
    ref = scenes.render_scenes(9, range(3), SIZE)
    lines = (out / "list.txt").read_text().splitlines()
    assert lines == ["images/000000.png", "images/000001.png", "images/000002.png"]
    for k in range(3):
        image = np.asarray(Image.open(out / lines[k]).convert("RGB")).astype(np.float64)
        expect = ((ref["image"][k].permute(1, 2, 0).double().numpy() + 1) / 2 * 255)
        assert image.shape == (SIZE, SIZE, 3) and np.abs(image - expect).max() <= 0.5 + 1e-6
        png = _decode_depth_png(out / "depth" / f"00000{k}.png")
        npy = np.load(out / "depth" / f"00000{k}.npy")
        assert npy.dtype == np.float32 and np.array_equal(npy, ref["depth"][k].numpy())
        assert np.abs(png - npy).max() <= 0.2 / 65535 / 2 + 1e-6
        assert np.allclose(gt_depth_from_png(out / "depth" / f"00000{k}.png").numpy(), png)
        meta = json.loads((out / "meta" / f"00000{k}.json").read_text())
        assert np.allclose(meta["view"], ref["view"][k].numpy())
        assert np.allclose(meta["view"], scenes.view_from_raw(torch.tensor([meta["view_raw"]]))[0])
        ambient, diffuse, direction = scenes.light_from_raw(torch.tensor([meta["light_raw"]]))
        assert math.isclose(meta["light"]["ambient"], ambient.item(), rel_tol=1e-6)
        assert np.allclose(meta["light"]["direction"], direction[0].numpy())
    for name, prior in (("view_prior.pt", scenes.view_prior()),
                        ("light_prior.pt", scenes.light_prior())):
        loaded = torch.load(out / name)
        assert set(loaded) == {"mean", "cov"}
        assert torch.equal(loaded["mean"], prior["mean"])
        assert torch.equal(loaded["cov"], prior["cov"])
    # The reconstruction's prior loader reads them as they are.
    loaded = ViewLightPrior.load(out / "view_prior.pt", out / "light_prior.pt")
    assert torch.allclose(loaded.view_mean.float(), scenes.view_prior()["mean"])
    assert torch.allclose(loaded.light_cov.float(), scenes.light_prior()["cov"])

    # Resume: complete samples are kept, a missing file is rendered again, identically.
    kept = (out / "images" / "000000.png").stat().st_mtime_ns
    before = (out / "images" / "000001.png").read_bytes()
    (out / "meta" / "000001.json").unlink()
    assert cli.main(["make-data", "--out", str(out), "-n", "4", "--seed", "9",
                     "--size", str(SIZE)]) == 0
    assert (out / "images" / "000000.png").stat().st_mtime_ns == kept
    assert (out / "images" / "000001.png").read_bytes() == before
    assert len((out / "list.txt").read_text().splitlines()) == 4
    assert not list(out.rglob("*.tmp"))
    # A different family cannot be mixed into the same folder.
    assert cli.main(["make-data", "--out", str(out), "-n", "4", "--seed", "10",
                     "--size", str(SIZE)]) == 2
    assert "another seed" in capsys.readouterr().err


def test_make_data_split_name_prefixes_the_stems(tmp_path):
    out = tmp_path / "split"
    assert cli.main(["make-data", "--out", str(out), "-n", "1", "--seed", "1", "--size", "16",
                     "--split-name", "test"]) == 0
    assert (out / "list.txt").read_text() == "images/test_000000.png\n"
    assert (out / "meta" / "test_000000.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "-n must be at least 1"),
    (["-n", "2", "--size", "8"], "--size must be between"),
    (["-n", "2", "--seed", "-1"], "--seed must be non-negative"),
    (["-n", "2", "--split-name", "a/b"], "--split-name may hold only"),
    (["-n", "2", "--max-translation", "0"], "--max-translation must be in"),
    (["-n", "2", "--out", "/proc/gan2shape-no"], "cannot create --out"),
])
def test_make_data_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    assert cli.main(["make-data", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --- family v2 ---------------------------------------------------------------------------

def test_v2_lights_stay_in_their_ranges_and_priors_are_their_moments():
    n = 4000
    u = _batch(n, seed=3)
    ambient, diffuse, _ = scenes.light_from_raw(scenes.lights_raw(u, "v2"))
    assert ambient.min() >= 0.14 and ambient.max() <= 0.16 and ambient.max() > 0.159
    assert diffuse.min() >= 0.84 and diffuse.max() <= 0.86 and diffuse.min() < 0.841
    raw, prior = scenes.lights_raw(u, "v2"), scenes.light_prior("v2")
    std = raw.std(0)
    assert ((raw.mean(0) - prior["mean"]).abs() <= 4 * std / math.sqrt(n)).all()
    tol = 4 * torch.outer(std, std) / math.sqrt(n) + 2e-6
    assert ((torch.cov(raw.T) - prior["cov"].double()).abs() <= tol).all()
    # Hand-computed: ambient 0.14..0.16 is l0 in [-0.72, -0.68], mean -0.7, variance
    # 0.04^2 / 12.
    assert prior["mean"][0].item() == pytest.approx(-0.7)
    assert prior["cov"][0, 0].item() == pytest.approx(0.04**2 / 12)
    assert torch.equal(scenes.view_prior(family="v2")["cov"], scenes.view_prior()["cov"])


def test_v2_relief_is_deeper_and_its_albedo_flat_on_the_cheeks():
    u = _batch(64, seed=4)
    nose, spread = {}, {}
    for family in ("v1", "v2"):
        p = scenes.head_parameters(u, family)
        s, t, _ = heads.face_coords(p, SIZE)
        # The nose tip's height (towards the camera) over the head's width.
        nose[family] = -heads.relief(p, s, t).amin((1, 2)) / (2 * p["half_width"])
        albedo = heads.albedo(p, s, t, torch.full((64, 1, 1), 1e-3))
        # A cheek patch below each eye, skin only (where v1 paints its blush).
        below = t - p["eye_t"].view(-1, 1, 1)
        cheek = ((s.abs() - 0.42).abs() < 0.1) & (below > 0.2) & (below < 0.35)
        spread[family] = max(float((a[:, m].amax(1) - a[:, m].amin(1)).amax())
                             for a, m in zip(albedo, cheek, strict=True))
        assert set(p) == set(heads.HEAD_RANGES)  # v2's constants fill v1's other factors
    assert spread["v2"] < 1e-6 < 0.01 < spread["v1"]  # flat regions cannot paint shading
    assert nose["v2"].min() > 0.14 and nose["v2"].mean() > 1.4 * nose["v1"].mean()


def test_v2_scenes_are_reproducible_and_differ_from_v1():
    a = scenes.render_scenes(5, [0, 3], SIZE, family="v2")
    b = scenes.render_scenes(5, [3], SIZE, family="v2")
    assert torch.equal(a["image"][1], b["image"][0])
    assert not torch.allclose(a["image"], scenes.render_scenes(5, [0, 3], SIZE)["image"])
    with pytest.raises(ValueError, match="unknown family"):
        scenes.render_scenes(5, [0], SIZE, family="v3")


def test_make_data_family_v2_writes_its_priors_and_recipe(tmp_path):
    out = tmp_path / "v2"
    assert cli.main(["make-data", "--out", str(out), "-n", "2", "--seed", "9", "--size",
                     str(SIZE), "--family", "v2"]) == 0
    assert torch.equal(torch.load(out / "light_prior.pt")["mean"],
                       scenes.light_prior("v2")["mean"])
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["family"] == "v2" and "blush" in recipe["head_constants"]
    npy = np.load(out / "depth" / "000001.npy")
    assert np.array_equal(npy, scenes.render_scenes(9, [1], SIZE, family="v2")["depth"][0])
    # A v1 run into the same folder is refused (another recipe).
    assert cli.main(["make-data", "--out", str(out), "-n", "2", "--seed", "9", "--size",
                     str(SIZE)]) != 0
