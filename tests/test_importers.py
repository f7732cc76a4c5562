"""Reading reconstructions made elsewhere: meshes, point clouds and VGGT predictions.npz."""
import io

import numpy as np
import pytest
import trimesh

from core.data.importers import ReconstructionFileError, read_reconstruction


def _box_mesh():
    return trimesh.creation.box(extents=(1.0, 2.0, 3.0))


@pytest.mark.parametrize("kind", ["obj", "glb", "ply"])
def test_meshes_are_sampled_on_their_surface(kind):
    data = _box_mesh().export(file_type=kind)
    recon = read_reconstruction(data if isinstance(data, bytes) else data.encode(), f"box.{kind}")
    assert len(recon.points) == 100_000 and recon.mesh_faces is not None
    half = np.array([0.5, 1.0, 1.5])
    on_a_face = np.isclose(np.abs(recon.points), half, atol=1e-5).any(axis=1)
    assert on_a_face.all() and (np.abs(recon.points) <= half + 1e-5).all()


def test_vggt_predictions_keep_confident_points_with_cameras():
    rng = np.random.default_rng(0)
    world = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    conf = rng.random((2, 4, 5)).astype(np.float32)
    extrinsic = np.tile(np.eye(4)[:3], (2, 1, 1))
    buffer = io.BytesIO()
    np.savez(buffer, world_points=world, world_points_conf=conf, extrinsic=extrinsic,
             images=rng.random((2, 3, 4, 5)).astype(np.float32))
    recon = read_reconstruction(buffer.getvalue(), "predictions.npz", view_ids=[3, 9])
    keep = conf >= np.percentile(conf, 50)
    np.testing.assert_array_equal(recon.points, world[keep])
    assert recon.view_ids == [3, 9] and recon.cam_from_world.shape == (2, 4, 4)
    assert set(recon.source_view.tolist()) <= {0, 1} and recon.colors.dtype == np.uint8
    with pytest.raises(ReconstructionFileError, match="2 frames but 3 view ids"):
        read_reconstruction(buffer.getvalue(), "predictions.npz", view_ids=[1, 2, 3])


def test_unsupported_and_oversized_inputs():
    with pytest.raises(ReconstructionFileError, match="unsupported file type .xyz"):
        read_reconstruction(b"1 2 3", "cloud.xyz")
    with pytest.raises(ReconstructionFileError, match="empty"):
        read_reconstruction(b"", "cloud.ply")
    with pytest.raises(ReconstructionFileError, match="not a readable .npz"):
        read_reconstruction(b"garbage", "predictions.npz")


@pytest.mark.parametrize("with_colors", [True, False])
def test_written_ply_reads_back_exactly(with_colors):
    from core.data.importers import ply_bytes
    from tests.conftest import ply_bytes as reference_ply_bytes

    rng = np.random.default_rng(1)
    points = rng.normal(size=(257, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (257, 3), dtype=np.uint8) if with_colors else None
    data = ply_bytes(points, colors)
    assert data == reference_ply_bytes(points, colors)  # the test suite's hand-written writer
    recon = read_reconstruction(data, "cloud.ply")
    np.testing.assert_array_equal(recon.points, points)
    if with_colors:
        np.testing.assert_array_equal(recon.colors, colors)
    else:
        assert recon.colors is None


def test_file_errors_are_user_errors():
    from core.errors import UserError

    assert issubclass(ReconstructionFileError, UserError) and not issubclass(ReconstructionFileError, ValueError)
