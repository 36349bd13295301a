"""The factor networks' state dicts against the release's naming, read off its code.

The expected tables below were written by hand from the release's layer sequences
(Unsup3d's EDDeconv / Encoder, GAN2Shape's ResEncoder); each entry is
(Sequential index, parameter shapes) for layers that own parameters.
"""

import pytest
import torch
import torch.nn.functional as F

from gan2shape.errors import UserError
from gan2shape.recon.networks import ResBlockDown, build_networks, load_networks


def conv(cout, cin, k):
    return {"weight": (cout, cin, k, k)}


def convt(cin, cout, k=4):  # transposed convolutions store (in, out, k, k)
    return {"weight": (cin, cout, k, k)}


def gn(c):
    return {"weight": (c,), "bias": (c,)}


def expand(table, prefix="network"):
    out = {}
    for idx, params in table.items():
        for name, shape in params.items():
            out[f"{prefix}.{idx}.{name}"] = shape
    return out


# EDDeconv at 64 px: nf 64, GroupNorm base 16, zdim 256.
ED64 = {
    0: conv(64, 3, 4), 1: gn(64), 3: conv(128, 64, 4), 4: gn(128), 6: conv(256, 128, 4),
    7: gn(256), 9: conv(512, 256, 4), 11: conv(256, 512, 4), 13: convt(256, 512),
    15: conv(512, 512, 3), 17: convt(512, 256), 18: gn(256), 20: conv(256, 256, 3), 21: gn(256),
    23: convt(256, 128), 24: gn(128), 26: conv(128, 128, 3), 27: gn(128), 29: convt(128, 64),
    30: gn(64), 32: conv(64, 64, 3), 33: gn(64), 36: conv(64, 64, 3), 37: gn(64),
    39: conv(64, 64, 5), 40: gn(64),
}
# EDDeconv at 128 px: nf 32, GroupNorm base 8; one extra down and up block.
ED128 = {
    0: conv(32, 3, 4), 1: gn(32), 3: conv(64, 32, 4), 4: gn(64), 6: conv(128, 64, 4), 7: gn(128),
    9: conv(256, 128, 4), 10: gn(256), 12: conv(512, 256, 4), 14: conv(256, 512, 4),
    16: convt(256, 512), 18: conv(512, 512, 3), 20: convt(512, 256), 21: gn(256),
    23: conv(256, 256, 3), 24: gn(256), 26: convt(256, 128), 27: gn(128), 29: conv(128, 128, 3),
    30: gn(128), 32: convt(128, 64), 33: gn(64), 35: conv(64, 64, 3), 36: gn(64),
    38: convt(64, 32), 39: gn(32), 41: conv(32, 32, 3), 42: gn(32), 45: conv(32, 32, 3),
    46: gn(32), 48: conv(32, 32, 5), 49: gn(32),
}
ENC64 = {0: conv(64, 3, 4), 2: conv(128, 64, 4), 4: conv(256, 128, 4), 6: conv(512, 256, 4),
         8: conv(512, 512, 4)}
ENC128 = {0: conv(32, 3, 4), 2: conv(64, 32, 4), 4: conv(128, 64, 4), 6: conv(256, 128, 4),
          8: conv(512, 256, 4), 10: conv(512, 512, 4)}


def resblock(cin, cout):
    return {"conv1.weight": (cout, cin, 3, 3), "conv2.weight": (cout, cout, 3, 3),
            "conv_sc.weight": (cout, cin, 1, 1), "conv_sc.bias": (cout,)}


RES64 = {0: conv(32, 3, 4), 1: resblock(32, 64), 2: resblock(64, 128), 3: resblock(128, 256),
         5: conv(512, 256, 4), 7: conv(512, 512, 1)}
RES128 = {0: conv(32, 3, 4), 1: resblock(32, 64), 2: resblock(64, 128), 3: resblock(128, 256),
          4: resblock(256, 512), 6: conv(1024, 512, 4), 8: conv(512, 1024, 1)}


def expected(size):
    ed, enc, res, last = (ED64, ENC64, RES64, 42) if size == 64 else (ED128, ENC128, RES128, 51)
    nf = 64 if size == 64 else 32
    enc_last = 10 if size == 64 else 12
    return {
        "netD": expand({**ed, last: conv(1, nf, 5)}),
        "netA": expand({**ed, last: conv(3, nf, 5)}),
        "netV": expand({**enc, enc_last: conv(6, 512, 1)}),
        "netL": expand({**enc, enc_last: conv(4, 512, 1)}),
        "netEnc": expand(res),
    }


@pytest.mark.parametrize("size", [64, 128])
def test_state_dict_keys_and_shapes_match_release(size):
    nets = build_networks(size)
    assert list(nets) == ["netD", "netA", "netV", "netL", "netEnc"]
    for name, table in expected(size).items():
        got = {k: tuple(v.shape) for k, v in nets[name].state_dict().items()}
        assert got == table, name


@pytest.mark.parametrize("size", [64, 128])
def test_forward_shapes_and_ranges(size):
    nets = build_networks(size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert nets["netD"](x).shape == (2, 1, size, size)
        albedo = nets["netA"](x)
        assert albedo.shape == (2, 3, size, size) and albedo.abs().max() <= 1
        assert nets["netV"](x).shape == (2, 6) and nets["netL"](x).shape == (2, 4)
        assert nets["netEnc"](x).shape == (2, 512)


def test_resblock_shortcut_sees_rectified_input():
    torch.manual_seed(0)
    block = ResBlockDown(2, 3)
    with torch.no_grad():
        block.conv2.weight.zero_()  # residual branch contributes nothing
    x = torch.randn(1, 2, 4, 4)
    ref = F.conv2d(F.avg_pool2d(x.clamp(min=0), 2), block.conv_sc.weight, block.conv_sc.bias)
    torch.testing.assert_close(block(x), ref)
    assert not torch.allclose(block(x), block.conv_sc(F.avg_pool2d(x, 2)))


def test_release_format_loads_strictly_and_mismatch_is_one_line_error():
    src, dst = build_networks(64), build_networks(64)
    state = {k: v.state_dict() for k, v in src.items()}
    load_networks(dst, state)
    torch.testing.assert_close(dst["netV"].network[0].weight, src["netV"].network[0].weight)
    with pytest.raises(UserError, match="netD"):
        load_networks(build_networks(128), {"netD": state["netD"]}, "ckpt.pth")
    with pytest.raises(UserError):
        load_networks(dst, {"foo": 1})
    with pytest.raises(UserError):
        build_networks(96)


def test_narrow_networks_for_tests():
    nets = build_networks(64, nf=16, enc_nf=8)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert nets["netD"](x).shape == (1, 1, 64, 64)
        assert nets["netEnc"](x).shape == (1, 512)
    assert nets["netD"].network[0].weight.shape == (16, 3, 4, 4)
    with pytest.raises(UserError):
        build_networks(64, nf=24)
