"""Sample scenes rendered with exact ground truth (open3d CPU ray casting).

The toy scene: a plush-toy-like figure (body, head with snout and eyes, two ears, arms, feet,
a tail) with high-frequency solid texture, standing on a textured table top in front of a
textured cylindrical backdrop, seen from views on a 360° orbit with some height variation.

World frame: metres, z up, the table top is the plane z = 0 and the toy stands at the origin.
Cameras: OpenCV, pixel centres at integer coordinates (see :mod:`core.geometry`).
Everything is deterministic from the seed.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from core import geometry
from core.data.scene import Scene

log = logging.getLogger(__name__)

GENERATOR_VERSION = "toy-1"


@dataclass(frozen=True)
class ToySceneSpec:
    """Parameters of the rendered toy scene (defaults = the bundled ``sample_data/toy``)."""

    seed: int = 7
    num_views: int = 42
    width: int = 480            # portrait, like a phone video
    height: int = 640
    fov_y_deg: float = 50.0
    orbit_radius: float = 0.95  # metres, horizontal distance of the cameras from the toy axis
    orbit_height: float = 0.45  # mean camera height above the table
    height_amplitude: float = 0.15
    look_at_height: float = 0.26
    sdf_resolution: float = 0.004  # marching-cubes cell size of the toy mesh (m)
    gt_points: int = 100_000


# --------------------------------------------------------------------------- the toy's shape
# Ellipsoid parts: centre (x, y, z), radii (a, b, c). The toy faces -y (its snout points there).
_PARTS = {
    "body": ((0.0, 0.0, 0.17), (0.115, 0.095, 0.14)),
    "head": ((0.0, -0.005, 0.37), (0.125, 0.105, 0.10)),
    "snout": ((0.0, -0.095, 0.345), (0.045, 0.035, 0.03)),
    "ear_left": ((-0.05, 0.01, 0.51), (0.03, 0.022, 0.095)),
    "ear_right": ((0.055, 0.01, 0.50), (0.03, 0.022, 0.085)),
    "arm_left": ((-0.12, -0.01, 0.21), (0.035, 0.035, 0.075)),
    "arm_right": ((0.125, -0.03, 0.25), (0.034, 0.06, 0.034)),  # raised forward: asymmetric
    "foot_left": ((-0.055, -0.025, 0.035), (0.045, 0.065, 0.035)),
    "foot_right": ((0.055, -0.025, 0.035), (0.045, 0.065, 0.035)),
    "tail": ((0.0, 0.1, 0.1), (0.035, 0.035, 0.035)),
}


def _ellipsoid_sdf(points: np.ndarray, centre, radii) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the surface's zero set)."""
    radii = np.asarray(radii)
    q = (points - np.asarray(centre)) / radii
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / radii, axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def toy_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside, metres) of the toy, ``[...,3] -> [...]``, cut flat at z = 0."""
    values = None
    for centre, radii in _PARTS.values():
        d = _ellipsoid_sdf(points, centre, radii)
        values = d if values is None else _smooth_min(values, d, 0.02)
    return np.maximum(values, -points[..., 2])


def toy_mesh(resolution: float = 0.004) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh of :func:`toy_sdf`: ``vertices [V,3] float64``, ``faces [F,3] int32``.

    Faces are wound counter-clockwise seen from outside (normals point out).
    """
    from skimage.measure import marching_cubes

    lo = np.array([-0.22, -0.18, -0.01])
    hi = np.array([0.22, 0.16, 0.64])
    axes = [np.arange(lo[i], hi[i] + resolution, resolution) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    volume = toy_sdf(grid)
    vertices, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(resolution,) * 3)
    vertices = vertices + lo
    faces = faces[:, ::-1]  # skimage winds inward for an SDF negative inside
    return vertices, faces.astype(np.int32)


# --------------------------------------------------------------------------- solid textures
class _ValueNoise:
    """Seeded 3-D value noise in [0, 1] (trilinear interpolation of a hashed lattice)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.perm = np.concatenate([rng.permutation(256)] * 2)
        self.values = rng.random(256)

    def _lattice(self, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        p = self.perm
        return self.values[p[p[p[i & 255] + (j & 255)] + (k & 255)]]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        base = np.floor(points).astype(np.int64)
        frac = points - base
        smooth = frac * frac * (3 - 2 * frac)
        i, j, k = base[:, 0], base[:, 1], base[:, 2]
        out = np.zeros(len(points))
        for dx in (0, 1):
            wx = smooth[:, 0] if dx else 1 - smooth[:, 0]
            for dy in (0, 1):
                wy = smooth[:, 1] if dy else 1 - smooth[:, 1]
                for dz in (0, 1):
                    wz = smooth[:, 2] if dz else 1 - smooth[:, 2]
                    out += wx * wy * wz * self._lattice(i + dx, j + dy, k + dz)
        return out

    def fractal(self, points: np.ndarray, frequencies: tuple[float, ...]) -> np.ndarray:
        total = np.zeros(len(points))
        weight_sum = 0.0
        for octave, frequency in enumerate(frequencies):
            weight = 0.6 ** octave
            total += weight * self(points * frequency + 17.0 * octave)
            weight_sum += weight
        return total / weight_sum


class ToyTextures:
    """Colour of every surface point of the scene, by the geometry it belongs to."""

    TOY, TABLE, BACKDROP, FLOOR = 0, 1, 2, 3

    def __init__(self, seed: int) -> None:
        self.noise = [_ValueNoise(seed * 101 + i) for i in range(6)]

    def colour(self, geometry_id: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``float [N,3]`` RGB in [0,1] for world ``points [N,3]`` on geometry ``geometry_id [N]``."""
        out = np.zeros((len(points), 3))
        for gid, fn in ((self.TOY, self._toy), (self.TABLE, self._table),
                        (self.BACKDROP, self._backdrop), (self.FLOOR, self._floor)):
            sel = geometry_id == gid
            if sel.any():
                out[sel] = fn(points[sel])
        return np.clip(out, 0.0, 1.0)

    def _toy(self, p: np.ndarray) -> np.ndarray:
        fine = self.noise[0].fractal(p, (60.0, 130.0, 260.0))
        blotch = self.noise[1].fractal(p, (18.0, 40.0))
        cream = np.array([0.95, 0.92, 0.84])
        dress = np.array([0.93, 0.45, 0.12])
        base = np.where((p[:, 2] < 0.27)[:, None] & (p[:, 2] > 0.06)[:, None], dress, cream)
        shade = 0.55 + 0.6 * fine[:, None]
        tint = np.stack([0.9 + 0.2 * blotch, 0.85 + 0.25 * (1 - blotch), 0.9 + 0.1 * blotch], axis=1)
        colour = base * shade * tint
        for sx in (-0.045, 0.045):  # eyes
            eye = ((p[:, 0] - sx) ** 2 + (p[:, 2] - 0.39) ** 2 < 0.014 ** 2) & (p[:, 1] < -0.05)
            colour[eye] = 0.06
        mouth = (np.abs(p[:, 0]) < 0.012) & (np.abs(p[:, 2] - 0.335) < 0.012) & (p[:, 1] < -0.1)
        colour[mouth] = [0.5, 0.05, 0.05]
        return colour

    def _table(self, p: np.ndarray) -> np.ndarray:
        grain = self.noise[2].fractal(p * np.array([1.0, 8.0, 8.0]), (12.0, 40.0))
        fine = self.noise[3].fractal(p, (90.0, 200.0))
        rings = 0.5 + 0.5 * np.sin(p[:, 1] * 90.0 + grain * 9.0)
        wood = np.array([0.55, 0.36, 0.2]) * (0.6 + 0.35 * rings[:, None] + 0.3 * fine[:, None])
        checker = ((np.floor(p[:, 0] * 10) + np.floor(p[:, 1] * 10)) % 2)[:, None]
        return wood * (0.85 + 0.25 * checker)

    def _backdrop(self, p: np.ndarray) -> np.ndarray:
        hue = self.noise[4].fractal(p, (1.5, 4.0))
        fine = self.noise[5].fractal(p, (25.0, 60.0))
        c1 = np.array([0.2, 0.45, 0.75])
        c2 = np.array([0.85, 0.8, 0.35])
        c3 = np.array([0.35, 0.7, 0.4])
        mix = hue[:, None]
        base = np.where(mix < 0.5, c1 * (1 - 2 * mix) + c2 * 2 * mix, c2 * (2 - 2 * mix) + c3 * (2 * mix - 1))
        return base * (0.55 + 0.6 * fine[:, None])

    def _floor(self, p: np.ndarray) -> np.ndarray:
        fine = self.noise[2].fractal(p, (8.0, 30.0))
        checker = ((np.floor(p[:, 0] * 3) + np.floor(p[:, 1] * 3)) % 2)[:, None]
        return np.array([0.45, 0.45, 0.5]) * (0.5 + 0.4 * checker + 0.4 * fine[:, None])


# --------------------------------------------------------------------------- the renderer
def _open3d_mesh(vertices: np.ndarray, faces: np.ndarray):
    import open3d as o3d

    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(np.asarray(vertices, dtype=np.float32))
    mesh.triangle.indices = o3d.core.Tensor(np.asarray(faces, dtype=np.int32))
    return mesh


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    box = o3d.geometry.TriangleMesh.create_box(*(np.asarray(hi) - np.asarray(lo)))
    box.translate(np.asarray(lo, dtype=np.float64))
    return np.asarray(box.vertices), np.asarray(box.triangles)


def _cylinder(radius: float, z0: float, z1: float, segments: int = 128) -> tuple[np.ndarray, np.ndarray]:
    angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    vertices = np.concatenate([np.c_[ring, np.full(segments, z0)], np.c_[ring, np.full(segments, z1)]])
    faces = []
    for i in range(segments):
        j = (i + 1) % segments
        faces += [[i, j, segments + j], [i, segments + j, segments + i]]
    return vertices, np.asarray(faces)


class ToyRenderer:
    """Ray-casts the toy scene for arbitrary pinhole cameras.

    Returns per view: ``rgb uint8 [H,W,3]``, z-``depth float32 [H,W]`` and ``mask bool [H,W]``.
    """

    def __init__(self, spec: ToySceneSpec = ToySceneSpec()) -> None:
        import open3d as o3d

        self.spec = spec
        self.textures = ToyTextures(spec.seed)
        self.toy_vertices, self.toy_faces = toy_mesh(spec.sdf_resolution)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.ids = {}
        parts = {
            ToyTextures.TOY: (self.toy_vertices, self.toy_faces),
            ToyTextures.TABLE: _box((-0.6, -0.6, -0.04), (0.6, 0.6, 0.0)),
            ToyTextures.BACKDROP: _cylinder(2.4, -1.0, 3.0),
            ToyTextures.FLOOR: _box((-2.5, -2.5, -0.85), (2.5, 2.5, -0.8)),
        }
        for kind, (vertices, faces) in parts.items():
            self.ids[self.scene.add_triangles(_open3d_mesh(vertices, faces))] = kind
        self.light = np.array([0.4, -0.5, 1.0]) / np.linalg.norm([0.4, -0.5, 1.0])

    def render(self, intrinsics: np.ndarray, cam_from_world: np.ndarray, height: int, width: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import open3d as o3d

        world_from_cam = geometry.invert_transform(cam_from_world)
        grid = geometry.pixel_grid(height, width).reshape(-1, 2)
        rays_cam = geometry.unproject_pixels(grid, 1.0, intrinsics)  # camera frame, z = 1
        directions = rays_cam @ world_from_cam[:3, :3].T  # camera z-component 1: t_hit = z-depth
        origins = np.broadcast_to(world_from_cam[:3, 3], directions.shape)
        rays = o3d.core.Tensor(np.concatenate([origins, directions], axis=1).astype(np.float32))
        hit = self.scene.cast_rays(rays)
        t_hit = hit["t_hit"].numpy().astype(np.float64)
        geometry_ids = hit["geometry_ids"].numpy()
        normals = hit["primitive_normals"].numpy().astype(np.float64)
        valid = np.isfinite(t_hit)
        kinds = np.full(len(t_hit), -1)
        for gid, kind in self.ids.items():
            kinds[geometry_ids == gid] = kind
        points = origins + directions * np.where(valid, t_hit, 0.0)[:, None]
        colour = self.textures.colour(kinds, points)
        lambert = np.abs(normals @ self.light)
        colour = colour * (0.45 + 0.6 * lambert)[:, None]
        colour[~valid] = 0.0
        rgb = np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8).reshape(height, width, 3)
        depth = np.where(valid, t_hit, 0.0).astype(np.float32).reshape(height, width)
        mask = (kinds == ToyTextures.TOY).reshape(height, width)
        return rgb, depth, mask

    def surface_points(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Area-uniform samples of the toy's visible surface (the flat bottom cap excluded).

        Returns ``points float32 [count,3]``, ``colors uint8 [count,3]`` (unlit texture),
        ``normals float32 [count,3]``.
        """
        v, f = self.toy_vertices, self.toy_faces
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        cross = np.cross(b - a, c - a)
        area = 0.5 * np.linalg.norm(cross, axis=1)
        normal = cross / np.maximum(2 * area[:, None], 1e-20)
        keep = ~((normal[:, 2] < -0.9) & (np.maximum(np.maximum(a[:, 2], b[:, 2]), c[:, 2]) < 0.004))
        area = np.where(keep, area, 0.0)
        rng = np.random.default_rng(seed)
        tri = rng.choice(len(f), size=count, p=area / area.sum())
        r1, r2 = rng.random(count), rng.random(count)
        s = np.sqrt(r1)
        points = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
        colour = self.textures.colour(np.full(count, ToyTextures.TOY), points)
        return (points.astype(np.float32), np.round(colour * 255).astype(np.uint8),
                normal[tri].astype(np.float32))


def orbit_cameras(spec: ToySceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics ``[N,3,3]`` and ``cam_from_world [N,4,4]`` of the 360° orbit (start in front of the toy)."""
    n = spec.num_views
    focal = geometry.focal_from_fov(spec.height, spec.fov_y_deg)
    k = np.array([[focal, 0, (spec.width - 1) / 2], [0, focal, (spec.height - 1) / 2], [0, 0, 1]])
    poses = []
    for i in range(n):
        angle = -np.pi / 2 + 2 * np.pi * i / n
        z = spec.orbit_height + spec.height_amplitude * np.sin(3 * angle + 0.4)
        eye = np.array([spec.orbit_radius * np.cos(angle), spec.orbit_radius * np.sin(angle), z])
        poses.append(geometry.look_at(eye, np.array([0.0, 0.0, spec.look_at_height])))
    return np.repeat(k[None], n, axis=0), np.stack(poses)


def render_toy_scene(spec: ToySceneSpec = ToySceneSpec(), views: list[int] | None = None,
                     name: str = "toy", progress=None) -> Scene:
    """Render the toy scene (all views, or only ``views``) with its exact ground truth."""
    renderer = ToyRenderer(spec)
    intrinsics, poses = orbit_cameras(spec)
    indices = list(range(spec.num_views)) if views is None else [int(v) for v in views]
    images, depths, masks = [], [], []
    for count, i in enumerate(indices):
        rgb, depth, mask = renderer.render(intrinsics[i], poses[i], spec.height, spec.width)
        images.append(rgb)
        depths.append(depth)
        masks.append(mask)
        if progress is not None:
            progress((count + 1) / len(indices), f"rendered view {i + 1}/{spec.num_views}")
    points, colors, normals = renderer.surface_points(spec.gt_points, spec.seed)
    return Scene(
        name=name, images=images, image_names=[f"view_{i:03d}.png" for i in indices],
        intrinsics=intrinsics[indices], cam_from_world=poses[indices],
        depths=np.stack(depths), masks=np.stack(masks),
        gt_points=points, gt_colors=colors, gt_normals=normals,
        mesh_vertices=renderer.toy_vertices.astype(np.float32), mesh_faces=renderer.toy_faces,
        provenance={"generator": GENERATOR_VERSION, "spec": asdict(spec), "views": indices,
                    "units": "metres", "world": "z up, table top z=0, toy at the origin",
                    "ground_truth": "exact (rendered)"},
    )


SAMPLE_IMAGE_FORMAT = "jpg"
SAMPLE_JPEG_QUALITY = 95
SAMPLE_DEPTH_SCALE = 1e-4  # metres per uint16 step (0.1 mm)


def write_toy_sample(folder, spec: ToySceneSpec = ToySceneSpec(), progress=None) -> Scene:
    """Render the toy scene and save it as the bundled sample (JPEG views, 16-bit depth PNGs)."""
    scene = render_toy_scene(spec, progress=progress)
    scene.save(folder, image_format=SAMPLE_IMAGE_FORMAT, jpeg_quality=SAMPLE_JPEG_QUALITY,
               depth_scale=SAMPLE_DEPTH_SCALE)
    return scene
