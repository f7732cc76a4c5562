"""A procedural ShapeNet-like data set in the 3D-R2N2 layout (made here, no download).

Five categories (chair, table, lamp, mug, airplane) of parametric shapes assembled from boxes,
cylinders / truncated cones, tubes and ellipsoids, each shape seeded. Every shape is rendered
from 24 azimuths at 137x137 with an open3d ray-casting renderer (Lambert shading, per-part
colours with value-noise texture, white background stored as alpha = 0) and sampled with
2,048 surface points.

Object frame (like ShapeNet): y up, the front faces +z, centred on its bounding-box centre and
scaled so that the bounding box's longest side is 1 (unit box). Cameras look at the origin.

Layout written (the 3D-R2N2 renderings + a point cloud per model)::

    DIR/<synset>/<model>/rendering/00.png ... 23.png   RGBA, 137x137
    DIR/<synset>/<model>/rendering/rendering_metadata.txt
        one line per view: azimuth_deg elevation_deg in_plane_deg distance fov_deg
        (distance in object units, fov = horizontal field of view)
    DIR/<synset>/<model>/pointcloud_2048.npy          float32 [2048,3], object frame
    DIR/splits.json                                     {"train": [...], "val": [...], "test": [...]}
                                                        entries "<synset>/<model>"
    DIR/dataset.json                                    generator version, options, categories
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core import geometry
from core.data.synthetic import _ValueNoise, _open3d_mesh

log = logging.getLogger(__name__)

GENERATOR_VERSION = "lmnet-procedural-1"
IMAGE_SIZE = 137
NUM_VIEWS = 24
NUM_POINTS = 2048
FOV_DEG = 30.0

# Fake synset ids (not ShapeNet's): category name -> folder name.
CATEGORIES = {"chair": "90000001", "table": "90000002", "lamp": "90000003", "mug": "90000004",
              "airplane": "90000005"}


# --------------------------------------------------------------------------- primitives
@dataclass
class Primitive:
    """One solid part: ``kind`` in box | cylinder | tube | ellipsoid.

    ``centre [3]``; ``size`` = box half-extents (x,y,z); cylinder/tube (r_bottom, r_top, half_h)
    along ``axis`` (0,1,2) with tube inner radius ``inner`` (fraction of the radius);
    ellipsoid radii (x,y,z). ``colour`` RGB in [0,1].
    """

    kind: str
    centre: tuple
    size: tuple
    colour: tuple
    axis: int = 1
    inner: float = 0.0

    def _local(self, points: np.ndarray) -> np.ndarray:
        """Points in the primitive's frame with its axis as local y."""
        p = points - np.asarray(self.centre)
        if self.kind in ("cylinder", "tube") and self.axis != 1:
            order = {0: [1, 0, 2], 2: [0, 2, 1]}[self.axis]
            p = p[:, order]
        return p

    def _from_local(self, points: np.ndarray) -> np.ndarray:
        p = points.copy()
        if self.kind in ("cylinder", "tube") and self.axis != 1:
            order = {0: [1, 0, 2], 2: [0, 2, 1]}[self.axis]
            p = p[:, order]
        return p + np.asarray(self.centre)

    def inside(self, points: np.ndarray, eps: float = 1e-4) -> np.ndarray:
        """``bool [N]``: strictly inside the solid (by more than ``eps``)."""
        p = self._local(points)
        s = np.asarray(self.size, dtype=np.float64)
        if self.kind == "box":
            return np.all(np.abs(p) < s - eps, axis=1)
        if self.kind == "ellipsoid":
            return np.sum((p / s) ** 2, axis=1) < (1 - eps / s.min()) ** 2
        r0, r1, h = s
        t = np.clip((p[:, 1] + h) / (2 * h), 0, 1)
        radius = r0 + (r1 - r0) * t
        r = np.hypot(p[:, 0], p[:, 2])
        ok = (np.abs(p[:, 1]) < h - eps) & (r < radius - eps)
        if self.kind == "tube":
            floor = -h + 0.12 * h  # the tube has a closed bottom of 6 % of its height
            ok &= (r > self.inner * radius + eps) | (p[:, 1] < floor - eps)
        return ok

    def mesh(self, segments: int = 48) -> tuple[np.ndarray, np.ndarray]:
        """``vertices [V,3]``, ``faces [F,3]`` (outward, counter-clockwise)."""
        s = np.asarray(self.size, dtype=np.float64)
        if self.kind == "box":
            corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
            faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                              [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
            return corners * s + np.asarray(self.centre), faces
        if self.kind == "ellipsoid":
            rings, seg = segments // 2, segments
            theta = np.linspace(0, np.pi, rings + 1)
            phi = np.linspace(0, 2 * np.pi, seg, endpoint=False)
            t, f = np.meshgrid(theta, phi, indexing="ij")
            unit = np.stack([np.sin(t) * np.cos(f), np.cos(t), np.sin(t) * np.sin(f)], -1).reshape(-1, 3)
            faces = []
            for i in range(rings):
                for j in range(seg):
                    a, b = i * seg + j, i * seg + (j + 1) % seg
                    c, d = a + seg, b + seg
                    faces += [[a, b, d], [a, d, c]]
            return unit * s + np.asarray(self.centre), np.asarray(faces)
        # cylinder / tube in local frame (axis = y), then mapped
        r0, r1, h = s
        ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        cos, sin = np.cos(ang), np.sin(ang)

        def ring(radius, y):
            return np.stack([radius * cos, np.full(segments, y), radius * sin], 1)

        verts = [ring(r0, -h), ring(r1, h)]
        faces = []

        def band(lo, hi, outward=True):
            for j in range(segments):
                k = (j + 1) % segments
                tri = [[lo + j, hi + j, hi + k], [lo + j, hi + k, lo + k]]
                faces.extend(tri if outward else [t[::-1] for t in tri])

        band(0, segments)
        n = 2 * segments
        if self.kind == "cylinder":
            verts.append(np.array([[0, -h, 0], [0, h, 0]], float))
            bottom, top = n, n + 1
            for j in range(segments):
                k = (j + 1) % segments
                faces.append([bottom, k, j])
                faces.append([top, segments + j, segments + k])
        else:
            floor = -h + 0.12 * h
            ri0 = self.inner * (r0 + (r1 - r0) * (floor + h) / (2 * h))
            ri1 = self.inner * r1
            verts += [ring(ri0, floor), ring(ri1, h), np.array([[0, -h, 0], [0, floor, 0]], float)]
            inner_lo, inner_hi = n, n + segments
            band(inner_lo, inner_hi, outward=False)
            bottom, floor_c = n + 2 * segments, n + 2 * segments + 1
            for j in range(segments):
                k = (j + 1) % segments
                faces.append([bottom, k, j])                       # outer bottom
                faces.append([floor_c, inner_lo + j, inner_lo + k])  # inner floor, facing up
                faces += [[segments + j, inner_hi + j, inner_hi + k], [segments + j, inner_hi + k, segments + k]]
        vertices = np.concatenate(verts)
        return self._from_local(vertices), np.asarray(faces)


# --------------------------------------------------------------------------- categories
def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _palette(rng) -> tuple:
    base = np.array([[0.55, 0.35, 0.2], [0.75, 0.2, 0.15], [0.2, 0.4, 0.7], [0.3, 0.6, 0.35],
                     [0.85, 0.7, 0.3], [0.45, 0.45, 0.5], [0.6, 0.3, 0.6], [0.9, 0.5, 0.2]])
    c = base[rng.integers(len(base))] * rng.uniform(0.8, 1.15)
    return tuple(np.clip(c, 0.05, 0.95))


def chair(rng) -> list[Primitive]:
    w, d = _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.6)
    seat_h, seat_t = _u(rng, 0.4, 0.5), _u(rng, 0.03, 0.07)
    back_h = _u(rng, 0.3, 0.6)
    leg = _u(rng, 0.02, 0.04)
    wood, cloth = _palette(rng), _palette(rng)
    parts = [Primitive("box", (0, seat_h, 0), (w / 2, seat_t / 2, d / 2), cloth)]
    round_legs = rng.random() < 0.5
    for sx in (-1, 1):
        for sz in (-1, 1):
            c = (sx * (w / 2 - leg), (seat_h - seat_t / 2) / 2, sz * (d / 2 - leg))
            half = (seat_h - seat_t / 2) / 2
            parts.append(Primitive("cylinder", c, (leg, leg, half), wood) if round_legs
                         else Primitive("box", c, (leg, half, leg), wood))
    back_y = seat_h + seat_t / 2 + back_h / 2
    if rng.random() < 0.6:
        parts.append(Primitive("box", (0, back_y, -d / 2 + 0.025), (w / 2, back_h / 2, 0.025), cloth))
    else:  # slatted back: posts and rails
        for sx in (-1, 1):
            parts.append(Primitive("box", (sx * (w / 2 - leg), back_y, -d / 2 + leg), (leg, back_h / 2, leg), wood))
        for k in range(int(rng.integers(2, 4))):
            y = seat_h + seat_t / 2 + back_h * (0.35 + 0.6 * k / 3)
            parts.append(Primitive("box", (0, y, -d / 2 + leg), (w / 2, 0.025, leg * 0.8), wood))
    if rng.random() < 0.35:  # armrests
        for sx in (-1, 1):
            parts.append(Primitive("box", (sx * (w / 2 - 0.02), seat_h + 0.2, 0), (0.025, 0.02, d / 2), wood))
            parts.append(Primitive("box", (sx * (w / 2 - 0.02), seat_h + 0.1, d / 2 - 0.03), (0.02, 0.1, 0.02), wood))
    return parts


def table(rng) -> list[Primitive]:
    h, t = _u(rng, 0.45, 0.75), _u(rng, 0.03, 0.06)
    colour, leg_colour = _palette(rng), _palette(rng)
    if rng.random() < 0.6:  # rectangular, four legs
        w, d = _u(rng, 0.8, 1.4), _u(rng, 0.5, 0.9)
        leg = _u(rng, 0.025, 0.05)
        parts = [Primitive("box", (0, h, 0), (w / 2, t / 2, d / 2), colour)]
        inset = _u(rng, 0.0, 0.08)
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(Primitive("box", (sx * (w / 2 - leg - inset), (h - t / 2) / 2, sz * (d / 2 - leg - inset)),
                                       (leg, (h - t / 2) / 2, leg), leg_colour))
        if rng.random() < 0.4:  # lower shelf
            parts.append(Primitive("box", (0, h * 0.25, 0), (w / 2 - leg - inset, 0.015, d / 2 - leg - inset), colour))
    else:  # round, pedestal
        r = _u(rng, 0.35, 0.6)
        parts = [Primitive("cylinder", (0, h, 0), (r, r, t / 2), colour),
                 Primitive("cylinder", (0, h / 2, 0), (_u(rng, 0.03, 0.06),) * 2 + ((h - t) / 2,), leg_colour),
                 Primitive("cylinder", (0, 0.02, 0), (r * _u(rng, 0.4, 0.7),) * 2 + (0.02,), leg_colour)]
    return parts


def lamp(rng) -> list[Primitive]:
    metal, shade = _palette(rng), _palette(rng)
    base_r, pole_h = _u(rng, 0.12, 0.25), _u(rng, 0.5, 1.2)
    parts = [Primitive("cylinder", (0, 0.02, 0), (base_r, base_r * _u(rng, 0.6, 1.0), 0.02), metal)]
    pole_r = _u(rng, 0.012, 0.025)
    parts.append(Primitive("cylinder", (0, 0.04 + pole_h / 2, 0), (pole_r, pole_r, pole_h / 2), metal))
    top = 0.04 + pole_h
    x = 0.0
    if rng.random() < 0.4:  # an arm reaching out
        arm = _u(rng, 0.15, 0.35)
        parts.append(Primitive("cylinder", (arm / 2, top, 0), (pole_r, pole_r, arm / 2), metal, axis=0))
        x = arm
    sh = _u(rng, 0.1, 0.25)
    r_bottom, r_top = _u(rng, 0.12, 0.28), _u(rng, 0.05, 0.15)
    if rng.random() < 0.7:
        parts.append(Primitive("cylinder", (x, top - sh * 0.5, 0), (r_bottom, r_top, sh), shade))
    else:
        parts.append(Primitive("ellipsoid", (x, top, 0), (r_bottom, sh, r_bottom), shade))
    return parts


def mug(rng) -> list[Primitive]:
    colour = _palette(rng)
    r, h = _u(rng, 0.12, 0.22), _u(rng, 0.2, 0.4)
    taper = _u(rng, 0.8, 1.15)
    parts = [Primitive("tube", (0, h / 2, 0), (r, r * taper, h / 2), colour, inner=_u(rng, 0.8, 0.9))]
    hh, reach, thick = h * _u(rng, 0.25, 0.4), _u(rng, 0.06, 0.12), _u(rng, 0.015, 0.03)
    rx = max(r, r * taper) * 0.95
    parts += [Primitive("box", (rx + reach / 2, h / 2 + hh, 0), (reach / 2, thick, thick), colour),
              Primitive("box", (rx + reach / 2, h / 2 - hh, 0), (reach / 2, thick, thick), colour),
              Primitive("box", (rx + reach, h / 2, 0), (thick, hh + thick, thick), colour)]
    return parts


def airplane(rng) -> list[Primitive]:
    body, wing_c = _palette(rng), _palette(rng)
    length, radius = _u(rng, 1.0, 1.6), _u(rng, 0.06, 0.11)
    span, chord = _u(rng, 0.8, 1.6), _u(rng, 0.15, 0.3)
    wing_z = _u(rng, -0.1, 0.15) * length
    wing_y = _u(rng, -0.6, 0.6) * radius
    parts = [Primitive("ellipsoid", (0, 0, 0), (radius, radius, length / 2), body),
             Primitive("box", (0, wing_y, wing_z), (span / 2, 0.015, chord / 2), wing_c),
             Primitive("box", (0, radius * 0.5, -length / 2 + 0.08), (span * _u(rng, 0.2, 0.35), 0.01, 0.06), wing_c),
             Primitive("box", (0, radius + _u(rng, 0.08, 0.15), -length / 2 + 0.08),
                       (0.01, _u(rng, 0.08, 0.15), 0.07), wing_c)]
    if rng.random() < 0.6:  # engines under the wings
        for sx in (-1, 1):
            parts.append(Primitive("cylinder", (sx * span * _u(rng, 0.2, 0.3), wing_y - 0.05, wing_z + 0.02),
                                   (0.035, 0.035, 0.09), body, axis=2))
    return parts


BUILDERS = {"chair": chair, "table": table, "lamp": lamp, "mug": mug, "airplane": airplane}


def make_shape(category: str, seed: int) -> list[Primitive]:
    """The primitives of shape ``seed`` of ``category``, normalised to the unit box at the origin."""
    rng = np.random.default_rng([seed, list(CATEGORIES).index(category)])
    parts = BUILDERS[category](rng)
    verts = np.concatenate([p.mesh()[0] for p in parts])
    lo, hi = verts.min(0), verts.max(0)
    centre, scale = (lo + hi) / 2, 1.0 / (hi - lo).max()
    out = []
    for p in parts:
        c = (np.asarray(p.centre) - centre) * scale
        out.append(Primitive(p.kind, tuple(c), tuple(np.asarray(p.size) * scale), p.colour, p.axis, p.inner))
    return out


def surface_points(parts: list[Primitive], count: int, seed: int) -> np.ndarray:
    """``float32 [count,3]`` area-uniform samples of the union's outer surface.

    Samples of one part that lie strictly inside another part are rejected (hidden surface).
    """
    rng = np.random.default_rng(seed)
    tris, owner = [], []
    for i, p in enumerate(parts):
        v, f = p.mesh()
        tris.append(v[f])
        owner.append(np.full(len(f), i))
    tris, owner = np.concatenate(tris), np.concatenate(owner)
    area = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    kept: list[np.ndarray] = []
    total = 0
    while total < count:
        n = 4 * count
        idx = rng.choice(len(tris), size=n, p=area / area.sum())
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        t = tris[idx]
        pts = (1 - s)[:, None] * t[:, 0] + (s * (1 - r2))[:, None] * t[:, 1] + (s * r2)[:, None] * t[:, 2]
        hidden = np.zeros(n, bool)
        for i, p in enumerate(parts):
            hidden |= (owner[idx] != i) & p.inside(pts)
        kept.append(pts[~hidden])
        total += int((~hidden).sum())
    return np.concatenate(kept)[:count].astype(np.float32)


class ShapeRenderer:
    """Ray-casts one shape (its primitives) with per-part colours on a white background."""

    def __init__(self, parts: list[Primitive], seed: int) -> None:
        import open3d as o3d

        self.parts = parts
        self.scene = o3d.t.geometry.RaycastingScene()
        self.part_of: dict[int, int] = {}
        for i, p in enumerate(parts):
            self.part_of[int(self.scene.add_triangles(_open3d_mesh(*p.mesh())))] = i
        self.noise = _ValueNoise(seed)
        self.light = np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5])

    def render(self, azimuth_deg: float, elevation_deg: float, distance: float,
               size: int = IMAGE_SIZE, fov_deg: float = FOV_DEG) -> np.ndarray:
        """``uint8 [size,size,4]`` RGBA (alpha 0 on the white background).

        The camera sits at ``distance`` from the origin at the given azimuth (about +y, from +z
        towards +x) and elevation, looking at the origin with y up.
        """
        import open3d as o3d

        az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
        eye = distance * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
        pose = geometry.look_at(eye, np.zeros(3), up=np.array([0.0, 1.0, 0.0]))
        k = geometry.intrinsics_from_fov(size, size, fov_deg)
        world_from_cam = geometry.invert_transform(pose)
        grid = geometry.pixel_grid(size, size).reshape(-1, 2)
        rays_cam = geometry.unproject_pixels(grid, 1.0, k)  # camera frame, z = 1
        dirs = rays_cam @ world_from_cam[:3, :3].T
        origins = np.broadcast_to(world_from_cam[:3, 3], dirs.shape)
        hit = self.scene.cast_rays(o3d.core.Tensor(np.concatenate([origins, dirs], 1).astype(np.float32)))
        t = hit["t_hit"].numpy().astype(np.float64)
        gid = hit["geometry_ids"].numpy()
        normals = hit["primitive_normals"].numpy().astype(np.float64)
        valid = np.isfinite(t)
        points = origins + dirs * np.where(valid, t, 0)[:, None]
        colour = np.ones((len(t), 3))
        for g, i in self.part_of.items():
            sel = valid & (gid == g)
            if sel.any():
                tex = 0.85 + 0.3 * self.noise.fractal(points[sel], (8.0, 20.0))
                colour[sel] = np.asarray(self.parts[i].colour) * tex[:, None]
        facing = np.where((normals * dirs).sum(1, keepdims=True) > 0, -normals, normals)
        lambert = np.clip(facing @ self.light, 0, 1)
        shade = 0.35 + 0.75 * lambert
        colour[valid] = colour[valid] * shade[valid, None]
        colour[~valid] = 1.0
        rgb = np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8)
        alpha = np.where(valid, 255, 0).astype(np.uint8)
        return np.concatenate([rgb, alpha[:, None]], 1).reshape(size, size, 4)


@dataclass(frozen=True)
class DatasetSpec:
    """Options of :func:`write_dataset` (defaults: 5 categories x 40 shapes)."""

    per_category: int = 40
    categories: tuple[str, ...] = tuple(CATEGORIES)
    seed: int = 0
    views: int = NUM_VIEWS
    image_size: int = IMAGE_SIZE
    points: int = NUM_POINTS
    val_fraction: float = 0.1
    test_fraction: float = 0.2


def view_parameters(model_seed: int, views: int = NUM_VIEWS) -> np.ndarray:
    """``[views,5]``: azimuth, elevation, in-plane rotation (0), distance, fov (deg / units).

    Azimuths are 360/views apart with a seeded jitter of +-3 deg; elevation 15..35 deg;
    distance 2.3..2.7 object units (the unit-box object fills roughly 55-70 % of the frame).
    """
    rng = np.random.default_rng([model_seed, 77])
    az = (np.arange(views) * 360.0 / views + rng.uniform(-3, 3, views)) % 360
    el = rng.uniform(15, 35, views)
    dist = rng.uniform(2.3, 2.7, views)
    return np.stack([az, el, np.zeros(views), dist, np.full(views, FOV_DEG)], 1)


def split_of(index: int, count: int, spec: DatasetSpec) -> str:
    """Fixed split by position: the last ``test_fraction`` are test, the ones before val."""
    n_test = max(1, int(round(count * spec.test_fraction)))
    n_val = max(1, int(round(count * spec.val_fraction))) if count >= 3 else 0
    if index >= count - n_test:
        return "test"
    if index >= count - n_test - n_val:
        return "val"
    return "train"


def write_model(folder: Path, category: str, seed: int, spec: DatasetSpec) -> None:
    parts = make_shape(category, seed)
    renderer = ShapeRenderer(parts, seed)
    params = view_parameters(seed, spec.views)
    (folder / "rendering").mkdir(parents=True, exist_ok=True)
    for i, (az, el, _, dist, fov) in enumerate(params):
        Image.fromarray(renderer.render(az, el, dist, spec.image_size, fov)).save(
            folder / "rendering" / f"{i:02d}.png")
    (folder / "rendering" / "rendering_metadata.txt").write_text(
        "".join(" ".join(f"{v:.4f}" for v in row) + "\n" for row in params))
    np.save(folder / "pointcloud_2048.npy", surface_points(parts, spec.points, seed))


def write_dataset(out: Path | str, spec: DatasetSpec = DatasetSpec(), progress=None) -> dict:
    """Generate the data set into ``out`` (see module docstring). Returns the splits."""
    out = Path(out)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    total = len(spec.categories) * spec.per_category
    done = 0
    for category in spec.categories:
        synset = CATEGORIES[category]
        for i in range(spec.per_category):
            seed = spec.seed * 100_003 + i
            model = f"{category}_{i:04d}"
            write_model(out / synset / model, category, seed, spec)
            splits[split_of(i, spec.per_category, spec)].append(f"{synset}/{model}")
            done += 1
            if progress is not None:
                progress(done / total, f"{category} {i + 1}/{spec.per_category}")
    (out / "splits.json").write_text(json.dumps(splits, indent=1))
    (out / "dataset.json").write_text(json.dumps(
        {"generator": GENERATOR_VERSION, "spec": asdict(spec), "categories": CATEGORIES,
         "frame": "y up, front +z, unit box (longest bbox side 1) centred at the origin"}, indent=1))
    return splits
