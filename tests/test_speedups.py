"""The speed-ups of issue 20 compute what the release's path computes: reused target features
equal recomputed ones, the frozen GAN never gets weight gradients, the steps' losses and
gradients are the same with and without reuse, the frozen GAN's bfloat16 autocast
(``gan_autocast``) stays within bfloat16 rounding and leaves the factor networks in
float32, the demo's results on held-out faces are unchanged by either, and the allocator
setting keeps freed memory in the process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gan2shape import embedded, perceptual
from gan2shape.config import load_config
from gan2shape.eval import heldout
from gan2shape.gan import Discriminator, Generator, StyleGAN2
from gan2shape.recon import Reconstructor, SequenceSpec, steps

STYLE_DIM = 32
CHANNELS = {4: 16, 8: 16, 16: 16, 32: 8, 64: 8}
NO_SEQUENCES = SequenceSpec(n_yaw=1, n_pitch=1, relight_x=(0.0,), relight_y=(0.0,),
                            relight_strength=(0.0,))


@pytest.fixture(scope="module")
def gan():
    torch.manual_seed(0)
    return StyleGAN2(Generator(64, style_dim=STYLE_DIM, channels=CHANNELS).eval(),
                     Discriminator(64, channels=CHANNELS).eval(), size=64)


def make(gan, reuse: bool, *overrides) -> tuple[Reconstructor, steps.Target]:
    cfg = load_config("tiny", overrides=[f"reuse_target_features={str(reuse).lower()}",
                                         "lam_perc=1.0", *overrides])
    rec = Reconstructor(gan, cfg, progress=False, sequences=NO_SEQUENCES)
    torch.manual_seed(1)
    w = gan.generator.mapping(torch.randn(1, STYLE_DIM)).detach()
    with torch.no_grad():
        image = gan.generator.synthesis(w)[0].clamp(-1, 1)
    return rec, rec.target(image, w)


def test_reused_target_features_equal_recomputed_ones_and_change_with_the_target():
    torch.manual_seed(0)
    d = Discriminator(64, channels=CHANNELS).requires_grad_(False)
    calls = []

    def features(x):
        calls.append(x.shape[0])
        return d.features(x, 3)

    memo = perceptual.TargetFeatures(features)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    first = memo(x)
    again = memo(x.clone())  # equal values, another tensor
    assert calls == [2] and again is first
    fresh = d.features(x, 3)
    assert all(torch.equal(a, b) for a, b in zip(again, fresh, strict=True))
    x[0, 0, 0, 0] += 0.5  # in place: the memo kept its own copy, so this is a new target
    changed = memo(x)
    assert calls == [2, 2]
    assert all(torch.equal(a, b) for a, b in zip(changed, d.features(x, 3), strict=True))
    assert not torch.equal(changed[0], first[0])
    off = perceptual.TargetFeatures(features, reuse=False)
    off(x), off(x)
    assert calls == [2, 2, 2, 2]


def test_discriminator_loss_with_given_real_features_is_the_same():
    torch.manual_seed(0)
    d = Discriminator(64, channels=CHANNELS).requires_grad_(False)
    fake = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    mask = (torch.rand(2, 1, 64, 64) > 0.3).float()
    a = perceptual.discriminator_feature_loss(d, fake, real, mask, 3)
    (ga,) = torch.autograd.grad(a, fake)
    b = perceptual.discriminator_feature_loss(d, fake, real, mask, 3, d.features(real, 3))
    (gb,) = torch.autograd.grad(b, fake)
    assert torch.equal(a, b) and torch.equal(ga, gb)


def losses_and_grads(rec: Reconstructor, target: steps.Target, step: str, flip: bool):
    """The loss of one step and its gradients for the networks that step trains; the
    samples of Step 3 are drawn from a fixed seed."""
    ctx = rec.ctx
    rec.reset()
    torch.manual_seed(3)
    canon = steps.canon_of(ctx, target)
    if step == "step1":
        names, loss = steps.STEP1_NETS, steps.step1_loss(ctx, target, flip)
        loss2 = steps.step1_loss(ctx, target, flip)  # a second iteration: the memo's hit
        loss = loss + loss2
    elif step == "step2":
        names, loss = steps.STEP2_NETS, steps.step2_loss(ctx, target, canon)
    else:
        samples = steps.collect(ctx, target, canon, 1)
        names, loss = steps.STEP3_NETS, steps.step3_loss(ctx, target, samples, flip)
    params = [p for n in names for p in ctx.nets[n].parameters() if p.requires_grad]
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("step,flip", [("step1", False), ("step1", True), ("step2", False),
                                       ("step3", False), ("step3", True)])
def test_steps_give_the_same_loss_and_gradients_with_and_without_reuse(gan, step, flip):
    on = losses_and_grads(*make(gan, True), step, flip)
    off = losses_and_grads(*make(gan, False), step, flip)
    assert torch.equal(on[0], off[0])
    assert all(torch.equal(a, b) for a, b in zip(on[1], off[1], strict=True))


def test_flipped_step3_computes_the_shared_target_features_once(gan, monkeypatch):
    rec, target = make(gan, True)
    calls = []
    d = rec.ctx.discriminator
    original = d.features
    monkeypatch.setattr(d, "features", lambda x, n: calls.append(x.requires_grad)
                        or original(x, n))
    losses_and_grads(rec, target, "step3", True)
    # the input (2 explanations) and the samples (2 explanations): 4 passes with gradient,
    # and one target pass each instead of two
    assert calls.count(True) == 4 and calls.count(False) == 2


def test_frozen_gan_gets_no_weight_gradients(gan):
    rec, target = make(gan, True)
    ctx = rec.ctx
    canon = steps.canon_of(ctx, target)
    for loss in (steps.step1_loss(ctx, target, True), steps.step2_loss(ctx, target, canon),
                 steps.step3_loss(ctx, target, steps.collect(ctx, target, canon, 1), True)):
        loss.backward()
    for net in (ctx.generator, ctx.discriminator):
        assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    assert any(p.grad is not None for p in ctx.nets["netEnc"].parameters())


def test_gan_autocast_is_opt_in(gan):
    assert load_config("tiny").gan_autocast == "none"
    for setting in ("bf16", "none"):
        rec, _ = make(gan, True, f"gan_autocast={setting}")
        assert rec.ctx.gan_bf16 == (setting == "bf16")


def test_bf16_discriminator_features_are_float32_and_within_bfloat16_rounding():
    torch.manual_seed(0)
    d = Discriminator(64, channels=CHANNELS).requires_grad_(False)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    ref = perceptual.discriminator_features(d, 3)(x)
    (g_ref,) = torch.autograd.grad(sum(f.square().sum() for f in ref), x)
    low = perceptual.discriminator_features(d, 3, bf16=True)(x)
    (g_low,) = torch.autograd.grad(sum(f.square().sum() for f in low), x)
    assert all(f.dtype == torch.float32 for f in low) and g_low.dtype == torch.float32
    for a, b in zip(low, ref, strict=True):
        err = ((a - b).norm() / b.norm()).item()
        assert 1e-5 < err < 2e-2  # bfloat16's rounding: not float32, not worse
    assert torch.nn.functional.cosine_similarity(g_low.flatten(), g_ref.flatten(), 0) > 0.999


def dtypes_inside(rec: Reconstructor, target: steps.Target) -> dict[str, set]:
    """Output dtypes of the generator's and discriminator's convolutions and of the factor
    networks while Steps 1, 2 and 3 (with flip) and their backward run."""
    ctx, seen = rec.ctx, {"generator": set(), "discriminator": set(), "factors": set()}
    hooks = []
    for name, module in (("generator", ctx.generator.convs[0]),
                         ("discriminator", ctx.discriminator.convs[1]),
                         *(("factors", net) for net in ctx.nets.values())):
        hooks.append(module.register_forward_hook(
            lambda m, i, out, name=name: seen[name].add(
                (out[0] if isinstance(out, tuple) else out).dtype)))
    canon = steps.canon_of(ctx, target)
    for loss in (steps.step1_loss(ctx, target, True), steps.step2_loss(ctx, target, canon),
                 steps.step3_loss(ctx, target, steps.collect(ctx, target, canon, 1), True)):
        assert loss.dtype == torch.float32
        loss.backward()
    for h in hooks:
        h.remove()
    assert all(p.grad is None or p.grad.dtype == torch.float32
               for net in ctx.nets.values() for p in net.parameters())
    return seen


def test_gan_autocast_runs_only_the_frozen_gan_in_bfloat16(gan):
    low = dtypes_inside(*make(gan, True, "gan_autocast=bf16"))
    assert low == {"generator": {torch.bfloat16}, "discriminator": {torch.bfloat16},
                   "factors": {torch.float32}}
    full = dtypes_inside(*make(gan, True, "gan_autocast=none"))
    assert all(v == {torch.float32} for v in full.values())


SHORT = ["stage_len_dict={step1: 30, step2: 4, step3: 8}", "collect_iters=2"]


def demo_scores(faces: list[int], overrides: list[str]) -> list[dict]:
    """SIDE / MAD of the demo_v1 preset with the embedded GAN on held-out test faces
    (latent: the GAN's mean). demo_v1, not the shipped demo, because it uses every lever:
    the perceptual term on the discriminator's features and Step 3's flipped batches."""
    gan = embedded.load_embedded_gan("cpu")
    cfg = load_config("demo_v1", overrides=[
        f"view_mvn_path={embedded.asset_path(embedded.VIEW_PRIOR_FILE)}",
        f"light_mvn_path={embedded.asset_path(embedded.LIGHT_PRIOR_FILE)}", *overrides])
    rec = Reconstructor(gan, cfg, progress=False, sequences=NO_SEQUENCES)
    latent = gan.generator.mean_latent()
    scene = heldout.heldout_scenes(faces)
    return [rec.fit(scene["image"][i], latent, gt_depth=scene["depth"][i]).metrics
            for i in range(len(faces))]


def assert_same_results(on: list[dict], off: list[dict]) -> None:
    for a, b in zip(on, off, strict=True):
        assert abs(a["SIDE"] - b["SIDE"]) * 100 <= 0.002  # SIDE in units of 1e-2
        assert abs(a["MAD_deg"] - b["MAD_deg"]) <= 0.05


REUSE_ON, REUSE_OFF = ["reuse_target_features=true"], ["reuse_target_features=false"]


def test_demo_results_unchanged_by_reuse_on_two_heldout_faces_short_schedule():
    assert_same_results(demo_scores([0, 1], SHORT + REUSE_ON),
                        demo_scores([0, 1], SHORT + REUSE_OFF))


def test_demo_results_within_tolerance_with_bf16_gan_on_two_heldout_faces_short_schedule():
    # A guard against a broken cast, not the acceptance check: with the full schedule the
    # bfloat16 GAN stays within it on 16 of the 20 test faces (docs/performance.md).
    assert_same_results(demo_scores([0, 1], SHORT + ["gan_autocast=bf16"]),
                        demo_scores([0, 1], SHORT + ["gan_autocast=none"]))


@pytest.mark.slow
def test_demo_results_unchanged_by_reuse_on_two_heldout_faces_full_schedule():
    assert_same_results(demo_scores([2, 3], REUSE_ON), demo_scores([2, 3], REUSE_OFF))


ALLOCATION = textwrap.dedent("""
    import sys, torch
    from gan2shape.memory import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 20
    x = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
    before = rss_mb()
    del x
    print(applied, before - rss_mb())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keep_freed_memory_keeps_a_freed_large_block_in_the_process():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "GAN2SHAPE_MALLOC"))}

    def freed_mb(mode):
        out = subprocess.run([sys.executable, "-c", ALLOCATION, mode], capture_output=True,
                             text=True, check=True, env=env).stdout.split()
        return out[0] == "True", float(out[1])
    applied, kept = freed_mb("keep")
    if not applied:
        pytest.skip("not glibc")
    assert kept < 8  # the 64 MiB stay mapped for the next allocation
    assert freed_mb("default")[1] > 56  # by default they go straight back to the kernel


# --- exact channels_last shortcuts of the frozen GAN's convolutions (gan.nhwc) -----------

@pytest.fixture
def nhwc_switch():
    """set(on) turns the shortcuts on or off; restored afterwards."""
    from gan2shape.gan import nhwc
    was = nhwc._enabled
    yield nhwc.set_enabled
    nhwc.set_enabled(was)


def test_to_nchw_equals_contiguous_for_odd_and_even_shapes():
    from gan2shape.gan import nhwc
    for shape in ((2, 8, 129, 129), (3, 5, 4, 7), (1, 16, 1, 1)):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        out = nhwc.to_nchw(x)
        assert out.is_contiguous() and torch.equal(out, x.contiguous())


def test_a_shortcut_that_changes_bits_is_never_used():
    from gan2shape.gan import nhwc
    key, plain = ("test-signature",), torch.zeros(3)
    calls = []

    def fast():
        calls.append(1)
        return plain + 1e-7
    assert torch.equal(nhwc._checked(key, fast, lambda: plain), plain)
    assert nhwc._same_bits[key] is False
    assert torch.equal(nhwc._checked(key, fast, lambda: plain), plain) and calls == [1]


def conv_grads(x, weight, fn):
    x = x.clone().requires_grad_(True)
    out = fn(x, weight)
    (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), x)
    return out.detach(), grad


def test_stride2_conv_and_transposed_conv_give_the_plain_bits(nhwc_switch):
    from gan2shape.gan import nhwc
    torch.manual_seed(0)
    nhwc_switch(True)
    # the discriminator's first downsampling and the generator's last upsampling at 128 px,
    # channel multiplier 1 (batch 2)
    x = torch.randn(2, 128, 129, 129)
    w = torch.randn(256, 128, 3, 3) * 0.03
    fast = conv_grads(x, w, lambda a, b: nhwc.conv2d(a, b, None, 2, 0))
    plain = conv_grads(x, w, lambda a, b: torch.nn.functional.conv2d(a, b, stride=2))
    assert all(torch.equal(a, b) for a, b in zip(fast, plain, strict=True))
    xt = torch.randn(2, 256, 64, 64)
    wt = torch.randn(256, 128, 3, 3) * 0.03
    fast_t = conv_grads(xt, wt, lambda a, b: nhwc.conv_transpose2d(a, b, 2))
    plain_t = conv_grads(xt, wt, lambda a, b: torch.nn.functional.conv_transpose2d(a, b, stride=2))
    assert all(torch.equal(a, b) for a, b in zip(fast_t, plain_t, strict=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # gan_autocast's generator
        fast_b = conv_grads(xt.bfloat16(), wt, lambda a, b: nhwc.conv_transpose2d(a, b, 2))
        plain_b = conv_grads(xt.bfloat16(), wt,
                             lambda a, b: torch.nn.functional.conv_transpose2d(a, b, stride=2))
    assert fast_b[0].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(fast_b, plain_b, strict=True))
    # the signatures start with (2, 256, 64, 64): the gradient of the first, the input of the
    # transposed ones (float32 and bfloat16)
    used = [v for k, v in nhwc._same_bits.items()
            if k[0] in ("conv2d_backward", "conv_transpose2d") and k[1][0] == (2, 256, 64, 64)]
    if not all(used):
        pytest.skip("this CPU's oneDNN gives other bits on channels_last: shortcut off")
    assert len(used) == 3


@pytest.mark.parametrize("step,flip,autocast", [("step2", False, "none"), ("step3", True, "none"),
                                                ("step2", False, "bf16")])
def test_steps_give_the_same_loss_and_gradients_with_and_without_nhwc(gan, nhwc_switch, step,
                                                                      flip, autocast):
    nhwc_switch(True)
    on = losses_and_grads(*make(gan, True, f"gan_autocast={autocast}"), step, flip)
    nhwc_switch(False)
    off = losses_and_grads(*make(gan, True, f"gan_autocast={autocast}"), step, flip)
    assert torch.equal(on[0], off[0])
    assert all(torch.equal(a, b) for a, b in zip(on[1], off[1], strict=True))


def test_bf16_strided_blur_is_the_float32_blur_rounded_to_bfloat16():
    # the discriminator's downsampling under gan_autocast: bfloat16 channels_last, stride 2
    from gan2shape.gan.ops import fir_filter, make_blur_kernel
    torch.manual_seed(0)
    kernel = make_blur_kernel()
    x32 = torch.randn(2, 8, 32, 32)
    x = x32.bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fir_filter(x, kernel, (1, 1), down=2)
    ref = fir_filter(x.detach().float().contiguous(), kernel, (1, 1), down=2)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.float(), ref.bfloat16().float())  # one rounding of the float32 result
    grad = torch.randn_like(ref)
    (g,) = torch.autograd.grad(out, x, grad.bfloat16())
    xr = x.detach().float().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(fir_filter(xr, kernel, (1, 1), down=2), xr,
                                   grad.bfloat16().float())
    assert g.dtype == torch.bfloat16 and torch.equal(g.float(), g_ref.bfloat16().float())


def test_demo_results_identical_with_and_without_nhwc_on_two_heldout_faces_short_schedule(
        nhwc_switch):
    nhwc_switch(True)
    on = demo_scores([0, 1], SHORT)
    nhwc_switch(False)
    off = demo_scores([0, 1], SHORT)
    assert [(m["SIDE"], m["MAD_deg"]) for m in on] == [(m["SIDE"], m["MAD_deg"]) for m in off]
