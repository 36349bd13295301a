"""The "no GAN" ablation (``use_gan_samples: false``): the factor networks trained on the
input image alone, the GAN's generator never run."""

import pytest
import torch

from gan2shape.config import load_config
from gan2shape.data.scenes import render_scenes
from gan2shape.errors import UserError
from gan2shape.gan import Discriminator, Generator, StyleGAN2
from gan2shape.recon import Reconstructor, SequenceSpec, steps
from gan2shape.recon.reconstructor import stage_plan

STYLE_DIM = 32
CHANNELS = {4: 16, 8: 16, 16: 16, 32: 8, 64: 8}
SHORT_SEQUENCES = SequenceSpec(n_yaw=2, n_pitch=1, relight_x=(0.0,), relight_y=(0.0,),
                               relight_strength=(0.3,))
NO_GAN = ["use_gan_samples=false", "perceptual=none", "prior_iters=2", "lr=0.003"]


class GANForward(AssertionError):
    pass


@pytest.fixture
def guarded_gan():
    """A tiny StyleGAN2 whose every module raises when it runs forward."""
    torch.manual_seed(0)
    gan = StyleGAN2(Generator(64, style_dim=STYLE_DIM, channels=CHANNELS),
                    Discriminator(64, channels=CHANNELS), 64)

    def fail(module, inputs):
        raise GANForward(f"GAN module {type(module).__name__} ran")

    for net in (gan.generator, gan.discriminator):
        for module in net.modules():
            module.register_forward_pre_hook(fail)
    return gan


@pytest.fixture(scope="module")
def scene():
    s = render_scenes(1, [0], 64)
    return s["image"][0], s["depth"][0]


def test_guard_catches_a_generator_forward(guarded_gan):
    with pytest.raises(GANForward):
        guarded_gan.generator.mapping(torch.zeros(1, STYLE_DIM))


def test_no_gan_fit_never_runs_the_gan_and_keeps_the_step_budget(guarded_gan, scene,
                                                                 monkeypatch):
    cfg = load_config("tiny", overrides=NO_GAN)
    rec = Reconstructor(guarded_gan, cfg, progress=False, sequences=SHORT_SEQUENCES)
    calls = []
    train = Reconstructor.train_steps

    def counting(self, names, iters, desc, loss_fn):
        calls.append((names, iters))
        return train(self, names, iters, desc, loss_fn)

    monkeypatch.setattr(Reconstructor, "train_steps", counting)
    encoder = {k: v.clone() for k, v in rec.nets["netEnc"].state_dict().items()}
    image, gt = scene
    result = rec.fit(image, torch.zeros(1, STYLE_DIM), gt_depth=gt)

    expected = []
    for stage in stage_plan(cfg):  # Steps 1 and 3 as in the full method, no Step 2
        expected += [(steps.STEP1_NETS, stage.step1), (steps.STEP3_NETS, stage.step3)]
    assert calls == expected
    assert all(torch.equal(v, rec.nets["netEnc"].state_dict()[k]) for k, v in encoder.items())
    assert 0 <= result.metrics["SIDE"] < 1 and 0 <= result.metrics["MAD_deg"] < 90
    assert result.sequences["rotation_gan"].shape == result.sequences["rotation_mesh"].shape


def test_no_gan_step3_lowers_the_input_loss_and_trains_the_factor_networks(guarded_gan, scene):
    cfg = load_config("tiny", overrides=NO_GAN)
    rec = Reconstructor(guarded_gan, cfg, progress=False)
    ctx = rec.ctx
    target = rec.target(scene[0], torch.zeros(1, STYLE_DIM))
    assert target.gan_image is None
    rec.fit_prior(target)

    for net in ctx.nets.values():
        net.zero_grad(set_to_none=True)
    steps.step3_input_loss(ctx, target, flip=True).backward()
    trained = {k for k, n in ctx.nets.items() if any(p.grad is not None for p in n.parameters())}
    assert trained == set(steps.STEP3_NETS)

    def loss() -> float:
        with torch.no_grad():
            return float(steps.step3_input_loss(ctx, target))

    before = loss()
    rec.train_steps(steps.STEP3_NETS, 15, "step 3", lambda: steps.step3_input_loss(ctx, target))
    assert loss() < 0.8 * before


def test_use_gan_samples_must_be_a_bool():
    with pytest.raises(UserError, match="use_gan_samples"):
        load_config("tiny", overrides=["use_gan_samples=maybe"])
