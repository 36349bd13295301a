"""The three steps and the Reconstructor on a tiny randomly initialised StyleGAN2."""

import pytest
import torch

from gan2shape.config import load_config
from gan2shape.errors import UserError
from gan2shape.gan import Discriminator, Generator, load_stylegan2, save_stylegan2
from gan2shape.recon import Reconstructor, SequenceSpec, factors, steps
from gan2shape.recon import reconstructor as reconstructor_module

STYLE_DIM = 32
CHANNELS = {4: 16, 8: 16, 16: 16, 32: 8}
# One short stage: every step runs, with symmetry in step 3 and the object mask in step 2.
FAST = ["num_stage=1", "stage_len_dict={step1: 1, step2: 1, step3: 1}", "collect_iters=1",
        "prior_iters=1", "flip3_cfg=[true]", "flip1_cfg=[false]"]
SHORT_SEQUENCES = SequenceSpec(n_yaw=2, n_pitch=1, relight_x=(-1.0, 1.0), relight_y=(0.0,),
                               relight_strength=(0.3,))


class Interrupted(Exception):
    """Stands in for a run that was stopped (KeyboardInterrupt would stop pytest itself)."""


@pytest.fixture(scope="module")
def gan_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gan") / "tiny.pt"
    save_stylegan2(path, Generator(32, style_dim=STYLE_DIM, channels=CHANNELS),
                   Discriminator(32, channels=CHANNELS))
    return path


@pytest.fixture(scope="module")
def gan(gan_path):
    return load_stylegan2(gan_path)


@pytest.fixture(scope="module")
def sample(gan):
    """A GAN sample at 64 px (the smallest reconstruction size) and its latent."""
    torch.manual_seed(1)
    w = gan.generator.mapping(torch.randn(1, STYLE_DIM)).detach()
    with torch.no_grad():
        image = gan.generator.synthesis(w).clamp(-1, 1)
    image = torch.nn.functional.interpolate(image, size=64, mode="bilinear")[0]
    return image, w


def make_reconstructor(gan, *overrides, projector=None):
    cfg = load_config("tiny", overrides=[*FAST, *overrides])
    return Reconstructor(gan, cfg, progress=False, sequences=SHORT_SEQUENCES,
                         projector=projector)


def sample_lights(n):
    """n frontal lights (ambient 0.4, diffuse 0.6)."""
    return factors.Light(torch.full((n,), 0.4), torch.full((n,), 0.6),
                         factors.light_direction(torch.zeros(n, 2)))


def trained_with_grad(nets, generator, discriminator):
    names = {k for k, n in nets.items() if any(p.grad is not None for p in n.parameters())}
    assert all(p.grad is None and not p.requires_grad for p in generator.parameters())
    assert all(p.grad is None and not p.requires_grad for p in discriminator.parameters())
    return names


def zero_grads(nets):
    for n in nets.values():
        n.zero_grad(set_to_none=True)


@torch.no_grad()
def photometric(ctx, target):
    pred = ctx.predict(target.image)
    recon, valid = ctx.render(pred.f.depth, pred.f.image, pred.view)
    return float((((recon - target.image).abs()) * valid).sum() / (3 * valid.sum()))


def test_step1_lowers_photometric_loss_and_trains_only_albedo(gan, sample):
    rec = make_reconstructor(gan, "lr=0.003", "lam_perc=0")
    ctx = rec.ctx
    target = rec.target(*sample)
    zero_grads(ctx.nets)
    steps.step1_loss(ctx, target, flip=True).backward()
    assert trained_with_grad(ctx.nets, ctx.generator, ctx.discriminator) == {"netA"}
    zero_grads(ctx.nets)

    before = photometric(ctx, target)
    rec.train_steps(steps.STEP1_NETS, 8, "step 1", lambda: steps.step1_loss(ctx, target))
    after = photometric(ctx, target)
    assert after < 0.8 * before


def test_step2_lowers_projection_loss_and_trains_only_encoder(gan, sample):
    rec = make_reconstructor(gan, "lr=0.001", "batchsize=2")
    ctx = rec.ctx
    target = rec.target(*sample)
    torch.manual_seed(2)
    canon = steps.canon_of(ctx, target)
    samples = steps.sample_pseudo(ctx, canon, 2)
    pseudo, mask = samples.images, samples.masks
    assert samples.views.shape == (2, 6) and samples.lights.ambient.shape == (2,)
    assert pseudo.shape == (2, 3, 64, 64) and mask.shape == (2, 1, 64, 64)
    assert 0 < float(mask.mean()) <= 1

    def loss():
        return steps.projection_loss(ctx, target, pseudo, mask)

    zero_grads(ctx.nets)
    loss().backward()
    assert trained_with_grad(ctx.nets, ctx.generator, ctx.discriminator) == {"netEnc"}
    zero_grads(ctx.nets)
    with torch.no_grad():
        before = float(loss())
    rec.train_steps(steps.STEP2_NETS, 10, "step 2", loss)
    with torch.no_grad():
        after = float(loss())
    assert after < before


def test_projection_at_zero_code_is_the_latent_own_image(gan, sample):
    """With relative_enc the offset vanishes for the GAN image itself: E(x) - E(x) = 0, so
    h = center_h and mapping_tail(center_h) = center_w (the tail finishes the head's z=0)."""
    rec = make_reconstructor(gan)
    target = rec.target(*sample)
    with torch.no_grad():
        projected, offset = rec.ctx.project(target, target.gan_image)
    assert offset.abs().max() < 1e-5
    torch.testing.assert_close(projected, target.gan_image, atol=1e-5, rtol=0)


def test_step3_trains_factor_networks_not_encoder_and_flip_mirrors(gan, sample):
    rec = make_reconstructor(gan)
    ctx = rec.ctx
    target = rec.target(*sample)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    masks = torch.ones(2, 1, 64, 64)
    batch = steps.Samples(images, masks, torch.zeros(2, 6), sample_lights(2))
    zero_grads(ctx.nets)
    steps.step3_loss(ctx, target, batch, flip=True).backward()
    assert trained_with_grad(ctx.nets, ctx.generator, ctx.discriminator) == set(
        steps.STEP3_NETS)
    with torch.no_grad():
        pred = ctx.predict(target.image, flip=True)
    torch.testing.assert_close(pred.f.depth[1], pred.f.depth[0].flip(1))
    torch.testing.assert_close(pred.f.albedo[1], pred.f.albedo[0].flip(2))


def test_fit_resumes_after_the_last_finished_stage(gan, sample, tmp_path, monkeypatch):
    rec = make_reconstructor(gan, "num_stage=2", "flip3_cfg=[true, false]",
                             "flip1_cfg=[false, false]")
    checkpoint = tmp_path / "ck.pt"
    calls = []
    original = Reconstructor.run_stage

    def interrupted(self, target, stage, desc):
        calls.append(desc)
        if len(calls) == 2:
            raise Interrupted
        return original(self, target, stage, desc)

    monkeypatch.setattr(Reconstructor, "run_stage", interrupted)
    with pytest.raises(Interrupted):
        rec.fit(*sample, name="img", checkpoint=checkpoint)
    assert checkpoint.is_file()

    calls.clear()
    monkeypatch.setattr(Reconstructor, "fit_prior", lambda *a, **k: pytest.fail("prior refit"))
    result = rec.fit(*sample, name="img", checkpoint=checkpoint)
    assert calls == ["img stage 2/2"]
    assert torch.isfinite(result.depth).all()
    # another image (or configuration) never resumes from this checkpoint
    monkeypatch.setattr(Reconstructor, "fit_prior", lambda *a, **k: 0.0)
    monkeypatch.setattr(Reconstructor, "run_stage",
                        lambda self, t, s, desc: calls.append(desc) or {})
    calls.clear()
    rec.fit(*sample, name="other", checkpoint=checkpoint)
    assert calls == ["other stage 1/2", "other stage 2/2"]


def test_a_resumed_fit_ends_exactly_where_an_unbroken_one_does(gan, sample, tmp_path,
                                                              monkeypatch):
    """Stopped after stage 1 of 2 and run again, a fit restores the weights and the random
    stream of its checkpoint: the same factors, bit for bit."""
    settings = ("num_stage=2", "flip3_cfg=[true, false]", "flip1_cfg=[false, false]")
    expected = make_reconstructor(gan, *settings).fit(*sample, name="img")
    rec, checkpoint = make_reconstructor(gan, *settings), tmp_path / "ck.pt"
    real_stage, calls = Reconstructor.run_stage, []

    def stopping(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real_stage(self, *args)

    monkeypatch.setattr(Reconstructor, "run_stage", stopping)
    with pytest.raises(Interrupted):
        rec.fit(*sample, name="img", checkpoint=checkpoint)
    monkeypatch.setattr(Reconstructor, "run_stage", real_stage)
    assert torch.load(checkpoint)["stages_done"] == 1
    resumed = make_reconstructor(gan, *settings).fit(*sample, name="img",
                                                      checkpoint=checkpoint)
    for what in ("depth", "view_depth", "albedo", "normals", "recon"):
        assert torch.equal(getattr(resumed, what), getattr(expected, what)), what


def test_weights_are_reset_between_images(gan, sample):
    rec = make_reconstructor(gan)
    initial = {k: v.clone() for k, v in rec.nets["netA"].state_dict().items()}
    rec.fit(*sample, name="a")
    changed = rec.nets["netA"].state_dict()
    assert any(not torch.equal(initial[k], changed[k]) for k in initial)
    rec.reset()
    for k, v in rec.nets["netA"].state_dict().items():
        assert torch.equal(v, initial[k])


def test_output_file_list_matches_interfaces():
    expected = {"depth.png", "depth.npy", "normal.png", "albedo.png", "shading.png",
                "canonical.png", "view.json", "light.json", "mesh.obj", "mesh.mtl",
                "texture.png", "rotation.gif", "relight.gif", "rotation_grid.png",
                "relight_grid.png", "viewer.html", "metrics.json"}
    assert set(reconstructor_module.OUTPUT_FILES) == expected


def test_residual_prior_mode_starts_exactly_at_the_ellipsoid(gan, sample, monkeypatch):
    """prior_mode residual: no fitting steps, and before any step the depth is the ellipsoid
    prior placed on the mask (docs/method.md section 8 formula), up to the border columns."""
    from gan2shape.recon import priors

    monkeypatch.setattr(Reconstructor, "fit_prior", lambda *a, **k: pytest.fail("prior fit"))
    image, w = sample
    rec = make_reconstructor(gan, "prior_mode=residual", "num_stage=1",
                             "stage_len_dict={step1: 0, step2: 0, step3: 0}",
                             "flip3_cfg=[false]")
    target = rec.target(image, w)
    with torch.no_grad():
        depth = rec.ctx.predict(target.image, depth_offset=target.depth_offset).f.depth[0]
    cfg = rec.cfg
    prior = priors.ellipsoid_prior(target.mask[0, 0], cfg.category, cfg.prior_near,
                                   cfg.prior_far)
    torch.testing.assert_close(depth[:, 2:-2], prior[:, 2:-2], atol=1e-5, rtol=0)
    result = rec.fit(image, w)  # the whole pipeline runs in this mode too
    assert torch.isfinite(result.depth).all()


def test_residual_prior_mode_refuses_a_second_prior_fit(gan, sample):
    from gan2shape.errors import UserError

    rec = make_reconstructor(gan, "prior_mode=residual")
    target = rec.target(*sample)
    with pytest.raises(UserError, match="twice"):
        rec.fit_prior(target)


def test_residual_prior_mode_refuses_pretrained_depth(gan):
    from gan2shape.errors import UserError
    from gan2shape.recon.networks import build_networks

    cfg = load_config("tiny", overrides=[*FAST, "prior_mode=residual"])
    nets = build_networks(cfg.image_size, STYLE_DIM, cfg.nf, cfg.enc_nf)
    with pytest.raises(UserError, match="prior_mode residual"):
        Reconstructor(gan, cfg, pretrained={"netD": nets["netD"].state_dict()}, progress=False)


def test_lr_depth_and_lr_view_set_only_their_networks_step_size(gan):
    rec = make_reconstructor(gan, "lr=1e-3", "lr_depth=1e-5", "lr_view=1e-6")
    opt = steps.make_optimizer(rec.nets, steps.STEP3_NETS, rec.cfg)
    expected = {"netD": 1e-5, "netV": 1e-6, "netA": 1e-3, "netL": 1e-3}
    owner = {id(p): n for n in steps.STEP3_NETS for p in rec.nets[n].parameters()}
    for group in opt.param_groups:
        (name,) = {owner[id(p)] for p in group["params"]}
        assert group["lr"] == expected[name]
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(
        len(list(rec.nets[n].parameters())) for n in steps.STEP3_NETS)


@pytest.mark.parametrize("pseudo_views", [True, False])
def test_rendered_sample_params_explain_unprojected_pseudo_samples_exactly(gan, sample,
                                                                           pseudo_views):
    """Step 3 renders each sample from the input's depth and albedo under the parameters
    the pseudo sample was rendered under, so pseudo samples taken as their own projection
    add nothing to the loss; the networks' predicted parameters do not reproduce them."""
    overrides = ["perceptual=none", "batchsize=3", f"pseudo_views={str(pseudo_views).lower()}"]
    rec = make_reconstructor(gan, *overrides, "sample_params=rendered")
    ctx = rec.ctx
    target = rec.target(*sample)
    torch.manual_seed(3)
    pseudo = steps.sample_pseudo(ctx, steps.canon_of(ctx, target), 3)
    if not pseudo_views:
        assert torch.equal(pseudo.views, ctx.predict(target.image).view.expand(3, -1))
    with torch.no_grad():
        input_only = steps.reconstruction_loss(ctx, target.image, ctx.predict(target.image))
        rendered = steps.step3_loss(ctx, target, pseudo)
        ctx.cfg.sample_params = "predicted"
        predicted = steps.step3_loss(ctx, target, pseudo)
    torch.testing.assert_close(rendered, input_only, atol=1e-6, rtol=0)
    assert predicted > input_only + 1e-3


def test_refined_sample_lights_learn_the_light_a_projection_shows(gan, sample):
    """sample_params refined: samples that show the current shape under other lights than
    they were rendered under are explained exactly once Step 3's light offsets reach those
    lights; the offsets start at 0 (the rendered lights) and only they move here."""
    rec = make_reconstructor(gan, "perceptual=none", "pseudo_views=false", "lam_input3=0",
                             "sample_params=refined")
    ctx = rec.ctx
    target = rec.target(*sample)
    canon = steps.canon_of(ctx, target)
    torch.manual_seed(3)
    pseudo = steps.sample_pseudo(ctx, canon, 4)
    shown = factors.Light(pseudo.lights.ambient + 0.1, pseudo.lights.diffuse - 0.15,
                          factors.light_direction(torch.tensor([[0.3, 0.1], [-0.4, 0.2],
                                                                [0.1, -0.3], [0.5, 0.4]])))
    with torch.no_grad():
        texture = factors.canonical_image(canon.albedo.expand(4, -1, -1, -1),
                                          factors.shade(canon.normals.expand(4, -1, -1, -1), shown))
        images = ctx.render(canon.depth.expand(4, -1, -1), texture, pseudo.views)[0]
    cycler = steps.SampleCycler(steps.Samples(images, pseudo.masks, pseudo.views, pseudo.lights),
                                4, learn_lights=True)
    assert steps.SampleCycler(pseudo, 4).parameters() == []
    (offsets,) = cycler.parameters()
    assert torch.equal(offsets, torch.zeros(4, 4))
    torch.testing.assert_close(factors.light_from_raw(cycler.start).direction,
                               pseudo.lights.direction)
    optimizer = torch.optim.Adam([offsets], lr=0.03)
    with torch.no_grad():
        start = float(steps.step3_loss(ctx, target, cycler.next()))
        floor = float(steps.step3_loss(ctx, target, steps.Samples(images, pseudo.masks,
                                                                  pseudo.views, shown)))
    for _ in range(150):
        loss = steps.step3_loss(ctx, target, cycler.next())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learned = factors.light_from_raw(cycler.start + offsets.detach())
    assert float(loss.detach()) - floor < 0.05 * (start - floor)
    torch.testing.assert_close(learned.ambient, shown.ambient, atol=0.02, rtol=0)
    torch.testing.assert_close(learned.direction, shown.direction, atol=0.03, rtol=0)


def test_joint_pretraining_learns_refined_sample_lights(gan, sample):
    """Joint pre-training trains the refined lights with Step 3: from the same start, its
    weights differ from those under the rendered lights, and stay finite."""
    from gan2shape.recon import pretrain as pretrain_module

    weights = {}
    for params in ("rendered", "refined"):
        rec = make_reconstructor(gan, "pseudo_views=false", f"sample_params={params}",
                                 "stage_len_dict={step1: 1, step2: 1, step3: 3}", "collect_iters=2")
        torch.manual_seed(6)
        targets = [rec.target(*sample), rec.target(sample[0].flip(2), sample[1])]
        weights[params] = pretrain_module.pretrain(rec, targets)["netD"]
    assert all(torch.isfinite(v).all() for v in weights["refined"].values())
    assert any(not torch.equal(v, weights["rendered"][k])
               for k, v in weights["refined"].items())


@pytest.mark.parametrize("use_mask", [True, False])
def test_use_mask_keeps_the_samples_background_out_of_step3(gan, sample, use_mask):
    """With use_mask a projected sample counts only where it sees the object: its pixels
    off the object mask do not change the Step-3 loss (a background that no light changes
    would otherwise pull the depth near the rim, docs/analysis.md); without it they do."""
    rec = make_reconstructor(gan, "perceptual=none", "batchsize=3", "pseudo_views=false",
                             "sample_params=rendered", f"use_mask={str(use_mask).lower()}")
    ctx = rec.ctx
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 20 ** 2).float()
    target = rec.target(*sample, mask=disk)
    torch.manual_seed(3)
    pseudo = steps.sample_pseudo(ctx, steps.canon_of(ctx, target), 3)
    off_object = (disk < 0.5).expand(3, 3, -1, -1)
    noisy = pseudo.images.masked_fill(off_object, 1.0)
    with torch.no_grad():
        clean_loss = steps.step3_loss(ctx, target, pseudo)
        noisy_loss = steps.step3_loss(ctx, target, steps.Samples(noisy, pseudo.masks,
                                                                 pseudo.views, pseudo.lights))
    if use_mask:
        torch.testing.assert_close(noisy_loss, clean_loss, atol=1e-6, rtol=0)
    else:
        assert noisy_loss > clean_loss + 1e-2


def test_lam_input3_weights_only_the_input_images_terms_in_step3(gan, sample):
    """Step 3's loss is affine in lam_input3: the slope is the input image's own photometric
    term (the render of its factors against it, computed here by hand; flip3 on, so both
    explanations under their joint mask), and at 0 the samples and smoothness remain."""
    rec = make_reconstructor(gan, "perceptual=none", "batchsize=2", "flip3_cfg=[true]")
    ctx = rec.ctx
    target = rec.target(*sample)
    torch.manual_seed(5)
    pseudo = steps.sample_pseudo(ctx, steps.canon_of(ctx, target), 2)

    def loss_at(weight):
        ctx.cfg.lam_input3 = weight
        with torch.no_grad():
            return float(steps.step3_loss(ctx, target, pseudo, flip=True))

    with torch.no_grad():
        pred = ctx.predict(target.image, flip=True, depth_offset=target.depth_offset)
        recon, valid = ctx.render(pred.f.depth, pred.f.image, pred.view)
        joint = valid[:1] * valid[1:]
        by_hand = sum(float(((recon[i] - target.image[0]).abs() * joint[0]).sum()
                            / (joint.sum() * 3)) for i in range(2))
    at0, at1, at_half = loss_at(0.0), loss_at(1.0), loss_at(0.5)
    assert by_hand > 1e-3
    assert at1 - at0 == pytest.approx(by_hand, rel=1e-4)
    assert at_half == pytest.approx(at0 + 0.5 * by_hand, rel=1e-4)


def test_projector_replaces_the_gan_projection_and_step2(gan, sample):
    seen = []

    def truth(pseudo):  # a perfect GAN that returns each pseudo sample unchanged
        seen.append(pseudo.images.shape[0])
        return pseudo.images

    rec = make_reconstructor(gan, "collect_iters=3", "batchsize=2", projector=truth)
    encoder = {k: v.clone() for k, v in rec.nets["netEnc"].state_dict().items()}
    target = rec.target(*sample)
    last = rec.run_stage(target, reconstructor_module.stage_plan(rec.cfg)[0], "s")
    assert seen == [2, 2, 2] and "step2" not in last
    for k, v in rec.nets["netEnc"].state_dict().items():
        assert torch.equal(v, encoder[k])


def test_interrupted_pretraining_resumes_to_the_uninterrupted_weights(gan, sample, tmp_path,
                                                                     monkeypatch):
    """Joint pre-training over two images and two stages, stopped during stage 2 and run
    again from its checkpoint, ends with exactly the weights of a run that was never
    stopped (each stage is seeded, so the resumed stage draws the same samples)."""
    from gan2shape.recon import pretrain as pretrain_module

    image, w = sample
    settings = ["num_stage=2", "stage_len_dict2={step1: 1, step2: 1, step3: 1}",
                "flip1_cfg=[false, false]", "flip3_cfg=[true, false]",
                "collect_iters=2"]

    def run(checkpoint):
        rec = make_reconstructor(gan, *settings)
        targets = [rec.target(image, w), rec.target(image.flip(2), w)]
        return pretrain_module.pretrain(rec, targets, checkpoint)

    expected = run(None)
    real_stage, calls = pretrain_module.joint_stage, []

    def stopping_stage(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real_stage(*args, **kwargs)

    checkpoint = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(pretrain_module, "joint_stage", stopping_stage)
    with pytest.raises(Interrupted):
        run(checkpoint)
    monkeypatch.setattr(pretrain_module, "joint_stage", real_stage)
    assert torch.load(checkpoint)["stages_done"] == 1
    resumed = run(checkpoint)
    for net, state in expected.items():
        for key, value in state.items():
            assert torch.equal(value, resumed[net][key]), f"{net}.{key}"


def test_a_known_input_light_replaces_the_light_network(gan, sample):
    from gan2shape.errors import UserError

    rec = make_reconstructor(gan)
    image, w = sample
    known = factors.Light(torch.tensor([0.3]), torch.tensor([0.6]),
                          factors.light_direction(torch.tensor([[0.4, -0.2]])))
    result = rec.fit(image, w, light=known)
    assert result.light["ambient"] == pytest.approx(0.3)
    assert result.light["diffuse"] == pytest.approx(0.6)
    assert result.light["direction"] == pytest.approx(known.direction[0].tolist())

    target = rec.target(image, w)
    target.light = known
    for net in rec.nets.values():
        net.zero_grad(set_to_none=True)
    steps.step3_input_loss(rec.ctx, target).backward()
    assert all(p.grad is None for p in rec.nets["netL"].parameters())
    with pytest.raises(UserError, match="known light"):
        rec.fit(image, w, light=known.repeat(2))


def test_z_latent_space_projects_through_the_whole_mapping(gan, sample):
    """latent_space z: projected = G(mapping(z + E(x) - E(gan image))), by hand; the GAN
    image itself projects to itself, and the offset regularised is the z offset."""
    torch.manual_seed(2)
    z = torch.randn(1, STYLE_DIM)
    w = gan.generator.mapping(z)
    image = sample[0]
    rec = make_reconstructor(gan, "latent_space=z", "F1_d=8")
    target = rec.target(image, w, code=z)
    with torch.no_grad():
        projected, offset = rec.ctx.project(target, target.gan_image)
        assert offset.abs().max() < 1e-5
        torch.testing.assert_close(projected, target.gan_image, atol=1e-5, rtol=0)
        pseudo = target.gan_image.flip(3)
        projected, offset = rec.ctx.project(target, pseudo)
        enc = rec.nets["netEnc"]
        by_hand = gan.generator.mapping(z + enc(pseudo) - enc(target.gan_image))
        expected = rec.ctx.render_latent(by_hand, target.origin_size)
    torch.testing.assert_close(projected, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(offset, enc(pseudo) - enc(target.gan_image))
    with pytest.raises(UserError, match="needs the image's input latent z"):
        rec.target(image, w)
    with pytest.raises(UserError, match="needs F1_d 8"):
        make_reconstructor(gan, "latent_space=z", "F1_d=2")


def _gan_image_moved(rec, target, scale, seed):
    """The GAN's image of the target's latent moved by a random W offset of that scale."""
    torch.manual_seed(seed)
    offset = scale * torch.randn(2, STYLE_DIM)
    with torch.no_grad():
        return rec.ctx.render_offset(target, offset)


def test_optimised_projection_finds_a_gan_image_and_its_regulariser_holds_it(gan, sample):
    """projection optimise: a pseudo sample that is itself a GAN image near the input's is
    projected much closer to it than the input's own image is; a huge lam_regular keeps
    the offset near 0, so the projection stays near the input's GAN image."""
    rec = make_reconstructor(gan, "projection=optimise", "lam_regular=0",
                             "projection_steps=60", "projection_lr=0.05")
    target = rec.target(*sample)
    moved = _gan_image_moved(rec, target, 0.5, 3)
    masks = torch.ones(2, 1, 64, 64)
    pseudo = steps.Samples(moved, masks, torch.zeros(2, 6), sample_lights(2))
    start = float((target.gan_image - moved).abs().mean())
    projected = steps.project_samples(rec.ctx, target, pseudo)
    assert float((projected - moved).abs().mean()) < 0.3 * start
    held = make_reconstructor(gan, "projection=optimise", "lam_regular=1e6",
                              "projection_steps=20", "projection_lr=0.05")
    projected = steps.project_samples(held.ctx, held.target(*sample), pseudo)
    assert float((projected - target.gan_image).abs().mean()) < 0.05 * start


def test_optimised_projection_solves_each_sample_alone_and_skips_step2(gan, sample,
                                                                     monkeypatch):
    """collect optimises its samples together, as if each were optimised alone (one
    batch per call gives the same projections), and neither a stage nor joint
    pre-training trains the encoder."""
    rec = make_reconstructor(gan, "projection=optimise", "collect_iters=3", "batchsize=2",
                             "projection_steps=5")
    target = rec.target(*sample)
    canon = steps.canon_of(rec.ctx, target)
    torch.manual_seed(4)
    together = steps.collect(rec.ctx, target, canon, 3)
    monkeypatch.setattr(steps, "OPTIMISE_CHUNK", 2)
    torch.manual_seed(4)
    alone = steps.collect(rec.ctx, target, canon, 3)
    torch.testing.assert_close(together.images, alone.images, atol=1e-4, rtol=0)
    assert not torch.allclose(together.images[:2], together.images[2:4])
    encoder = {k: v.clone() for k, v in rec.nets["netEnc"].state_dict().items()}
    last = rec.run_stage(target, reconstructor_module.stage_plan(rec.cfg)[0], "s")
    assert "step2" not in last
    for k, v in rec.nets["netEnc"].state_dict().items():
        assert torch.equal(v, encoder[k])
    from gan2shape.recon import pretrain as pretrain_module

    weights = pretrain_module.pretrain(rec, [target, rec.target(sample[0].flip(2), sample[1])])
    for k, v in weights["netEnc"].items():
        assert torch.equal(v, encoder[k])
    with pytest.raises(UserError, match="projection must be one of"):
        make_reconstructor(gan, "projection=nearest")
