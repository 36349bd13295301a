"""Normals from depth (the release's formula) and Lambertian shading, against analytic
planes and a direct evaluation."""

import math

import torch

from gan2shape.render import lambertian_shading, normals_from_depth

F64 = torch.float64


def plane_depth_map(normal, h, size, fov_deg=10.0):
    f = (size - 1) / 2 / math.tan(math.radians(fov_deg) / 2)
    c = (size - 1) / 2
    v, u = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64),
                          indexing="ij")
    rays = torch.stack([(u - c) / f, (v - c) / f, torch.ones_like(u)], -1)
    return (h / (rays @ normal)).unsqueeze(0)


def test_normals_of_planes_and_the_release_epsilon():
    for size in (16, 64):
        normal = torch.tensor([0.3, -0.2, 1.0], dtype=F64)
        normal = normal / normal.norm()
        depth = plane_depth_map(normal, 1.0 * normal[2], size)
        out = normals_from_depth(depth)
        inner = out[0, 1:-1, 1:-1]
        # parallel to the plane's normal, on the +z side, as the release orients it
        cos = (inner @ normal) / inner.norm(dim=-1)
        torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-9, rtol=0)
        # the release's 1e-7 leaves them short of unit length, by more at higher resolution
        f = (size - 1) / 2 / math.tan(math.radians(5))
        assert (inner.norm(dim=-1) < 1 - 1e-4 * (64 / f)).all()
        # the frame is (0, 0, 1)
        frame = torch.cat([out[0, 0], out[0, -1], out[0, :, 0], out[0, :, -1]])
        torch.testing.assert_close(frame, torch.tensor([0, 0, 1.0], dtype=F64).expand_as(frame))


def test_unit_length_floor_matches_method_note():
    """docs/method.md section 8: normals 0.3 % (64 px) to 1.3 % (128 px) short of unit length."""
    for size, short in ((64, 0.003), (128, 0.013)):
        depth = torch.ones(1, size, size, dtype=F64)
        length = normals_from_depth(depth)[0, size // 2, size // 2].norm().item()
        assert abs((1 - length) - short) < 0.0015


def test_lambertian_shading():
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 5, 6, 3, generator=g, dtype=F64),
                                            dim=-1)
    light = torch.nn.functional.normalize(torch.randn(2, 3, generator=g, dtype=F64), dim=-1)
    ambient = torch.tensor([0.2, 0.5], dtype=F64)
    diffuse = torch.tensor([0.7, 0.3], dtype=F64)
    out = lambertian_shading(normals, light, ambient, diffuse)
    assert out.shape == (2, 1, 5, 6)
    for b in range(2):
        for i in range(5):
            for j in range(6):
                dot = sum(normals[b, i, j, k].item() * light[b, k].item() for k in range(3))
                expected = ambient[b].item() + diffuse[b].item() * max(0.0, dot)
                assert abs(out[b, 0, i, j].item() - expected) < 1e-12
