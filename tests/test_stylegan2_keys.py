"""State-dict keys and shapes against the rosinality layout, written out independently here."""

import pytest

from gan2shape.gan import Discriminator, Generator


def rosinality_widths(cm):
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm}


def expected_generator(size, cm, style_dim=512, n_mlp=8):
    ch = rosinality_widths(cm)
    keys = {}
    for i in range(1, n_mlp + 1):
        keys[f"style.{i}.weight"] = (style_dim, style_dim)
        keys[f"style.{i}.bias"] = (style_dim,)
    keys["input.input"] = (1, 512, 4, 4)

    def styled(prefix, cin, cout, up):
        keys[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        keys[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        keys[f"{prefix}.conv.modulation.bias"] = (cin,)
        if up:
            keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
        keys[f"{prefix}.noise.weight"] = (1,)
        keys[f"{prefix}.activate.bias"] = (cout,)

    def rgb(prefix, cin, up):
        keys[f"{prefix}.bias"] = (1, 3, 1, 1)
        keys[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        keys[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        keys[f"{prefix}.conv.modulation.bias"] = (cin,)
        if up:
            keys[f"{prefix}.upsample.kernel"] = (4, 4)

    styled("conv1", 512, 512, False)
    rgb("to_rgb1", 512, False)
    res, cin, n = 8, 512, 0
    while res <= size:
        styled(f"convs.{2 * n}", cin, ch[res], True)
        styled(f"convs.{2 * n + 1}", ch[res], ch[res], False)
        rgb(f"to_rgbs.{n}", ch[res], True)
        cin, res, n = ch[res], res * 2, n + 1
    layer, res = 0, 4
    while res <= size:
        for _ in range(1 if res == 4 else 2):
            keys[f"noises.noise_{layer}"] = (1, 1, res, res)
            layer += 1
        res *= 2
    return keys


def expected_discriminator(size, cm):
    ch = rosinality_widths(cm)
    keys = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
    res, block = size, 1
    while res > 4:
        cin, cout = ch[res], ch[res // 2]
        keys[f"convs.{block}.conv1.0.weight"] = (cin, cin, 3, 3)
        keys[f"convs.{block}.conv1.1.bias"] = (cin,)
        keys[f"convs.{block}.conv2.0.kernel"] = (4, 4)
        keys[f"convs.{block}.conv2.1.weight"] = (cout, cin, 3, 3)
        keys[f"convs.{block}.conv2.2.bias"] = (cout,)
        keys[f"convs.{block}.skip.0.kernel"] = (4, 4)
        keys[f"convs.{block}.skip.1.weight"] = (cout, cin, 1, 1)
        res, block = res // 2, block + 1
    keys["final_conv.0.weight"] = (512, 513, 3, 3)
    keys["final_conv.1.bias"] = (512,)
    keys["final_linear.0.weight"] = (512, 512 * 16)
    keys["final_linear.0.bias"] = (512,)
    keys["final_linear.1.weight"] = (1, 512)
    keys["final_linear.1.bias"] = (1,)
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("size,cm", [(128, 1), (256, 2)], ids=["config-e-128", "config-f-256"])
def test_generator_keys_and_shapes(size, cm):
    g = Generator(size, channel_multiplier=cm)
    assert shapes(g) == expected_generator(size, cm)
    assert g.n_latent == 2 * size.bit_length() - 4
    assert len(g.style) == 9  # pixel norm + 8 linear layers


@pytest.mark.parametrize("size,cm", [(128, 1), (256, 2)], ids=["config-e-128", "config-f-256"])
def test_discriminator_keys_and_shapes(size, cm):
    assert shapes(Discriminator(size, channel_multiplier=cm)) == expected_discriminator(size, cm)


def test_channels_override_and_small_sizes():
    widths = {4: 32, 8: 32, 16: 16, 32: 8}
    g = Generator(32, style_dim=64, n_mlp=2, channels=widths)
    sd = shapes(g)
    assert sd["convs.4.conv.weight"] == (1, 8, 16, 3, 3)
    assert sd["style.2.weight"] == (64, 64) and "style.3.weight" not in sd
    d = Discriminator(32, channels=widths)
    assert shapes(d)["convs.0.0.weight"] == (8, 3, 1, 1)
