"""The held-out test faces and the no-model baselines shared by the demo and the benchmark."""

import math

import pytest
import torch

from gan2shape import embedded
from gan2shape.config import load_config
from gan2shape.data.scenes import render_scenes
from gan2shape.eval import evaluation_mask, heldout
from gan2shape.eval.metrics import erode


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo")


def test_heldout_scenes_are_the_test_family_not_the_training_one():
    test = heldout.heldout_scenes([0, 1])
    assert test["image"].shape == (2, 3, embedded.IMAGE_SIZE, embedded.IMAGE_SIZE)
    family = embedded.FAMILY
    assert torch.equal(test["depth"],
                       render_scenes(embedded.TEST_SEED, [0, 1], 64, family=family)["depth"])
    train = render_scenes(embedded.TRAIN_SEED, [0, 1], 64, family=family)
    assert not torch.allclose(test["image"], train["image"])


def test_heldout_scenes_of_another_family_and_the_validation_split():
    val = heldout.heldout_scenes([3], "v2", "validation")
    assert embedded.VALIDATION_SEED == 2 and embedded.TEST_SEED == 1
    assert torch.equal(val["image"], render_scenes(2, [3], 64, family="v2")["image"])
    assert not torch.allclose(val["image"], heldout.heldout_scenes([3], "v2")["image"])
    with pytest.raises(ValueError, match="unknown split"):
        heldout.heldout_scenes([0], "v2", "train")


def test_average_depth_leaves_the_face_itself_out():
    pool = torch.rand(4, 5, 5) + 0.9  # faces 0..3, n = 3
    assert torch.allclose(heldout.average_depth_for(2, pool), (pool[0] + pool[1] + pool[3]) / 3)
    assert torch.allclose(heldout.average_depth_for(0, pool), (pool[1] + pool[2] + pool[3]) / 3)
    assert torch.allclose(heldout.average_depth_for(7, pool), (pool[0] + pool[1] + pool[2]) / 3)


def brute_side(pred, gt, mask):
    """The release's SIDE written out over a list of pixels."""
    triples = zip(pred.flatten().tolist(), gt.flatten().tolist(), mask.flatten().tolist(),
                  strict=True)
    e = [math.log(p) - math.log(g) for p, g, m in triples if m > 0]
    mean = sum(e) / len(e)
    return math.sqrt(sum((x - mean) ** 2 for x in e) / len(e))


def test_baseline_scores_of_a_test_face(cfg):
    gt = heldout.heldout_scenes([1])["depth"][0]
    object_mask = (gt < cfg.max_depth).float()
    pool = heldout.average_depth_pool(2)
    scores = heldout.baseline_scores(gt, object_mask, cfg, pool, 1)
    assert set(scores) == set(heldout.BASELINES)
    mask = evaluation_mask(gt[None], torch.ones(1, *gt.shape))[0]
    assert scores["constant depth"]["SIDE"] == pytest.approx(
        brute_side(torch.ones_like(gt), gt, mask), rel=1e-4)
    average = (pool[0] + pool[2]) / 2
    assert scores["average ground-truth depth"]["SIDE"] == pytest.approx(
        brute_side(average, gt, mask), rel=1e-4)
    for s in scores.values():
        assert 0 < s["SIDE"] < 0.2 and 0 < s["MAD_deg"] < 90


def test_depth_scores_ignore_a_global_scale(cfg):
    gt = heldout.heldout_scenes([0])["depth"][0]
    assert heldout.depth_scores(gt * 1.02, gt, cfg)["SIDE"] < 1e-5
    assert heldout.depth_scores(gt.flip(1), gt, cfg)["SIDE"] > 1e-3


def test_input_light_shades_the_input_as_the_scene_renderer_did():
    """The true light in the input's view frame explains the scene image: the view's depth
    normals shaded by it, times the albedo carried into the view, match the image inside
    the head; the head-frame light does not (test face 0 is pitched 21 deg)."""
    from gan2shape.data import scenes
    from gan2shape.recon import factors
    from gan2shape.render import normals_from_depth, reproject

    scene = heldout.heldout_scenes([0])
    view = scene["view"]
    assert view[0, :2].abs().max() > 0.1  # a turned face, or the check has no teeth
    albedo = reproject(scene["canon_depth"], scene["canon_albedo"] * 2 - 1, view,
                       scenes.FOV_DEG, scenes.ROT_CENTER_DEPTH)[0] / 2 + 0.5
    normals = normals_from_depth(scene["depth"], scenes.FOV_DEG)
    interior = erode(erode((scene["head_mask"] > 0.99).float()))[0] > 0

    def error(light):
        image = albedo * factors.shade(normals, light)
        return float((image - (scene["image"] / 2 + 0.5))[0][:, interior].abs().mean())

    assert error(heldout.input_light(scene)) < 0.003
    assert error(factors.light_from_raw(scene["light_raw"])) > 0.01


@pytest.mark.parametrize("yaw_deg", [0.0, 20.0])
def test_truth_projector_renders_what_the_scene_renderer_renders(cfg, yaw_deg):
    """For a face whose own view is the identity (input frame = head frame), the perfect
    GAN's image under a sample's view and light is the scene renderer's image of that face
    under them, away from the contour."""
    from gan2shape.data import scenes
    from gan2shape.recon import factors, steps

    u = scenes.sample_uniforms(embedded.TEST_SEED, [3])
    light_raw = torch.tensor([[-0.2, 0.1, 0.5, 0.3]])
    frontal = scenes.render_batch(u, torch.zeros(1, 6), light_raw)
    view_raw = torch.tensor([[0.0, yaw_deg / 60, 0.0, 0.0, 0.0, 0.0]])
    expected = scenes.render_batch(u, view_raw, light_raw)
    project = heldout.truth_projector(frontal, cfg)
    light = factors.light_from_raw(light_raw)
    view = scenes.view_from_raw(view_raw)
    pseudo = steps.Samples(torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64), view, light)
    image = project(pseudo)
    interior = (expected["head_mask"] > 0.5).float()
    for _ in range(5):  # the stretched rim of the turned side is 2.5D's own business
        interior = erode(interior)
    error = ((image - expected["image"]).abs() * interior[:, None]).amax()
    assert interior.sum() > 500
    assert error < 1e-3
    # a different light is visibly different: the check has teeth
    other = factors.light_from_raw(torch.tensor([[-0.2, 0.1, -0.5, 0.3]]))
    moved = project(steps.Samples(pseudo.images, pseudo.masks, view, other))
    assert ((moved - expected["image"]).abs() * interior[:, None]).amax() > 0.05


def test_family_projector_returns_a_family_member_relit_as_itself():
    """The family GAN's projection of one of its own members (the face under a new light
    of the family) with noise no family member has is that member: the fit from the input's
    family fit finds the new light, keeps the face and drops the noise, under Step 2's
    collection (no gradients)."""
    from gan2shape.data import scenes
    from gan2shape.recon import factors, steps

    scene = heldout.heldout_scenes([0], "v2", "validation")
    u = scenes.sample_uniforms(heldout.SPLIT_SEEDS["validation"], [0]).float()
    light_raw = torch.tensor([[-0.7, 0.7, -0.6, -0.1]])  # inside v2's light box
    relit = scenes.render_batch(u, scene["view_raw"][:1], light_raw, family="v2")["image"]
    head = (scene["head_mask"][:1, None] > 0.5).float().expand_as(relit)

    def error(images: torch.Tensor) -> float:
        return float(((images - relit).abs() * head).sum() / head.sum())

    project = heldout.family_projector(scene, "v2", steps=150, restarts=2)
    noisy = relit + 0.05 * torch.randn(relit.shape, generator=torch.Generator().manual_seed(0))
    pseudo = steps.Samples(noisy, torch.ones(1, 1, 64, 64), torch.zeros(1, 6),
                           factors.light_from_raw(light_raw))
    with torch.no_grad():
        projected = project(pseudo)
    assert error(scene["image"][:1]) > 0.05  # the new light is visibly new
    assert error(noisy) > 0.035
    assert error(projected) < 0.01
