"""data.fit: the family's own numbers fitted to an image through the scene renderer."""

import torch

from gan2shape.data import fit, scenes
from gan2shape.data.heads import HEAD_RANGES
from gan2shape.eval.scoring import score_depth

SIZE = 32


def _side(depth: torch.Tensor, gt: torch.Tensor) -> float:
    return float(score_depth(depth, gt, torch.ones_like(gt), scenes.FOV_DEG, scenes.MIN_DEPTH,
                             scenes.MAX_DEPTH)["side"][0])


def test_every_free_number_gets_gradient_and_no_other():
    u = scenes.sample_uniforms(3, [0, 1]).float().requires_grad_(True)
    view_raw = scenes.views_raw(u.detach()).float()
    fit.render_uniforms(u, view_raw, SIZE).abs().mean().backward()
    free = fit.free_slots()
    assert int(free.sum()) == len(HEAD_RANGES) + len(scenes.LIGHT_RAW_RANGES) \
        + len(scenes.BACKGROUND_RANGES)
    assert (u.grad[:, free] != 0).all()  # each image, each head/light/background number
    assert (u.grad[:, ~free] == 0).all()  # view slots (the view is given) and spare slots


def test_fit_from_the_centre_recovers_a_face():
    scene = scenes.render_scenes(1, [0], SIZE)
    truth = scenes.sample_uniforms(1, [0]).float()
    start = fit.centre_uniforms(1)
    result = fit.fit_input(scene["image"], scene["view_raw"], restarts=2, steps=250)

    def rendered(u: torch.Tensor) -> dict:
        return scenes.render_batch(u, scene["view_raw"], scenes.lights_raw(u), SIZE)

    side_start = _side(rendered(start)["depth"], scene["depth"])
    side_fit = _side(rendered(result.uniforms)["depth"], scene["depth"])
    assert side_fit < 0.05 * side_start
    head = slice(0, len(HEAD_RANGES))
    error_start = (start - truth)[0, head].abs().mean()
    error_fit = (result.uniforms - truth)[0, head].abs().mean()
    assert error_fit < 0.04 < 0.2 < error_start  # the start is ~0.25 off
    assert float(result.loss[0]) < 0.003
    assert torch.allclose(result.images, rendered(result.uniforms)["image"])


def test_fit_scenes_keeps_the_best_iterate():
    scene = scenes.render_scenes(1, [2], SIZE)
    start = fit.centre_uniforms(1)
    none = fit.fit_scenes(scene["image"], scene["view_raw"], start, steps=0)
    some = fit.fit_scenes(scene["image"], scene["view_raw"], start, steps=20, lr=0.05)
    assert torch.equal(none.uniforms, start.clamp(1e-4, 1 - 1e-4))
    assert float(some.loss[0]) < float(none.loss[0])


def test_the_anchor_holds_the_head_and_frees_the_light():
    """With a strong anchor the fit of a relit face from another face's numbers changes the
    light and (almost) not the head; without it the head moves too."""
    scene = scenes.render_scenes(1, [0], SIZE)
    other = scenes.sample_uniforms(1, [5]).float()
    head = slice(0, len(HEAD_RANGES))
    (light,) = scenes.uniform_slots("v1", ["light"])

    def moved(anchor: float) -> tuple[float, float]:
        result = fit.fit_scenes(scene["image"], scene["view_raw"], other, steps=40, anchor=anchor)
        change = (result.uniforms - other.clamp(1e-4, 1 - 1e-4)).abs()
        return float(change[0, head].max()), float(change[0, light].max())

    head_free, light_free = moved(0.0)
    head_held, light_held = moved(100.0)
    assert head_held < 1e-3 < 0.05 < head_free
    assert light_held > 0.05 and light_free > 0.05
