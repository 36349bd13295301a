"""recon.light_estimate: the input's light from the image and the shape prior."""

import math

import torch

from gan2shape.config import load_config
from gan2shape.eval import heldout
from gan2shape.recon.factors import light_direction
from gan2shape.recon.light_estimate import direction_scores, estimate_light, skin_pixels
from gan2shape.recon.priors import ellipsoid_prior
from gan2shape.render import lambertian_shading, normals_from_depth

S, FOV = 48, 10.0
MEAN = torch.tensor([-0.5, 0.2, 0.0, 0.25])  # raw (l0, l1, lx, ly)


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, float((a * b).sum())))))


def _ellipse_mask() -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(S) - (S - 1) / 2, torch.arange(S) - (S - 1) / 2,
                          indexing="ij")
    return (((x / 15) ** 2 + (y / 19) ** 2) < 1).float()


def _render(depth, mask, albedo, direction):
    """A flat-albedo Lambertian image (1, 3, S, S) in [-1, 1] of depth under direction."""
    shading = lambertian_shading(normals_from_depth(depth, FOV), direction[None],
                                 torch.tensor([0.2]), torch.tensor([0.7]))
    image = albedo.view(1, 3, 1, 1) * shading * mask + 0.5 * (1 - mask)
    return image * 2 - 1


def test_residual_is_zero_at_the_true_light_of_a_flat_albedo_shape():
    mask = _ellipse_mask()
    depth = ellipsoid_prior(mask, "object", 0.975, 1.02)[None]
    true = light_direction(torch.tensor([[0.5, 0.3]]))[0]
    image = _render(depth, mask, torch.tensor([0.8, 0.6, 0.5]), true)
    skin = skin_pixels((image[0] + 1) / 2, mask > 0.5)
    assert skin.sum() > 0.9 * mask.sum()  # one albedo: every object pixel is "skin"
    brightness = ((image[0] + 1) / 2).mean(0)[skin]
    normals = normals_from_depth(depth, FOV)[0][skin]
    others = light_direction(torch.tensor([[0.0, 0.25], [-0.5, 0.3], [0.5, -0.2]]))
    scores = direction_scores(brightness, normals, torch.cat([true[None], others]))
    assert scores[0] < 1e-10 < 1e-5 < scores[1:].min()
    # No shrinking: the grid's nearest direction (0.05 spacing); full shrinking: the mean.
    found = estimate_light(image, depth, mask[None, None], MEAN, FOV, shrink=1.0)
    assert _angle(found.direction[0], true) < 2.5
    prior = estimate_light(image, depth, mask[None, None], MEAN, FOV, shrink=0.0)
    assert _angle(prior.direction[0], light_direction(MEAN[None, 2:])[0]) < 1e-3
    assert torch.allclose(found.ambient, torch.tensor([0.25]))


def test_skin_pixels_leave_out_a_region_of_another_colour():
    mask = _ellipse_mask()
    depth = ellipsoid_prior(mask, "object", 0.975, 1.02)[None]
    image = (_render(depth, mask, torch.tensor([0.8, 0.6, 0.5]),
                     light_direction(torch.tensor([[-0.6, 0.2]]))[0])[0] + 1) / 2
    hair = torch.zeros(S, S, dtype=torch.bool)
    hair[:12] = True
    image[:, hair] = image[:, hair] * torch.tensor([0.3, 0.3, 0.4])[:, None]
    skin = skin_pixels(image, mask > 0.5)
    assert not (skin & hair).any() and (skin & ~hair & (mask > 0.5)).sum() > 0.9 * (
        (~hair & (mask > 0.5)).sum())


def test_estimate_beats_the_prior_mean_on_a_side_lit_face():
    from gan2shape import embedded
    from gan2shape.data import scenes
    from gan2shape.gan import load_stylegan2
    from gan2shape.recon import Reconstructor

    gan = load_stylegan2(embedded.asset_path(embedded.GAN_FILE))
    scene = heldout.heldout_scenes([0], "v2", "validation")  # a light 48 deg off the mean
    true = heldout.input_light(scene).direction[0]
    errors = {}
    for how in ("network", "estimate"):
        cfg = load_config("demo", overrides=[f"input_light={how}"])
        rec = Reconstructor(gan, cfg, progress=False)
        rec.ctx.prior.light_mean = scenes.light_prior("v2")["mean"]
        zero = torch.zeros(1, gan.generator.style_dim)
        target = rec.target(scene["image"][0], zero, code=zero)
        with torch.no_grad():
            light = rec.ctx.predict(target.image, depth_offset=target.depth_offset,
                                    light=target.light).f.light
        errors[how] = _angle(light.direction[0], true)
    assert errors["estimate"] < 20 < 40 < errors["network"]
