"""Dataset: photos, a video or the sample -> COLMAP cameras and points, dense cloud, object crop -> a scene."""
import json
from pathlib import Path

import numpy as np
import streamlit as st

from core.data.datasets import DATASETS_ENV, datasets_root
from core.data.datasets import co3d
from core.data.prepare import MIN_VIEWS, DatasetError
from core.data.prepare.crop import apply_crop, load_crop, load_dense
from core.data.prepare.frames import (DEFAULT_FRAMES, load_image_files, preview_strip, sample_video_frames,
                                      scene_image_files)
from core.data.prepare.pipeline import PrepareOptions, prepare
from core.data.prepare.uploads import VIDEO_SUFFIXES, store_uploads
from core.app import figures
from core.store.cache import REPO_ROOT
from core.progress import Stopped
from core.data.scene import Scene
from core.app.access import (my_scenes_panel, scene_destination, shown_path, submit_allowed,
                             upload_destination)
from core.app.widgets import StreamlitProgress, option_widgets, require_app_navigation
from core.app import jobs as app_jobs
from core.jobs.client import prepare_spec
from core.errors import UserError

require_app_navigation()

st.title("Dataset")
st.caption("Turn photos or a phone video of an object into a scene with a ground truth: COLMAP cameras and "
           "sparse points, a dense cloud (COLMAP PatchMatch with CUDA, else a CPU plane-sweep stereo), and the "
           "object cropped out of it. The scene then appears in the sidebar picker for every page.")


@st.cache_resource(show_spinner="Reading the annotations…", max_entries=4)
def _co3d_category(root: str, category: str, stamp: float):
    return co3d.load_category(Path(root), category)


@st.cache_resource(show_spinner="Reading the point cloud…", max_entries=4)
def _co3d_cloud(root: str, category: str, sequence: str, stamp: float):
    return co3d.sequence_point_cloud(_co3d_category(root, category, stamp), sequence)


def co3d_browser() -> None:
    """Browse a CO3D root found in the server's datasets folder (never a path typed by a user)."""
    folder = datasets_root()
    st.caption(f"CO3Dv2 sequences in the official layout, from the datasets folder `{folder}` "
               f"(set on the server with `{DATASETS_ENV}`). Cameras are shown converted to OpenCV; the point "
               "cloud is CO3D's COLMAP-derived cloud: arbitrary per-sequence scale, with missing regions.")
    roots = co3d.find_roots(folder)
    if not roots:
        st.info(f"No CO3D root in `{folder}`: place one there (a folder holding category folders with "
                "frame_annotations.jgz).")
        return
    root = roots[st.selectbox("CO3D root", sorted(roots), key="dataset.co3d.root")]
    try:
        categories = co3d.list_categories(root)
        category = st.selectbox("Category", categories, key="dataset.co3d.category")
        stamp = (root / category / co3d.FRAME_ANNOTATIONS).stat().st_mtime
        annotations = _co3d_category(str(root), category, stamp)
        sequences = co3d.list_sequences(annotations)
        if not sequences:
            st.info(f"{category} has no annotated sequence.")
            return
        sequence = st.selectbox("Sequence", sequences, key="dataset.co3d.sequence")
        frames = co3d.sequence_frames(annotations, sequence)
        index = (st.slider("Frame", 0, len(frames) - 1, 0, key="dataset.co3d.frame") if len(frames) > 1 else 0)
        frame = frames[index]
        image, mask, depth = co3d.read_frame(frame)
        points, colors, cloud = _co3d_cloud(str(root), category, sequence, stamp)
    except UserError as error:
        st.error(str(error))
        return
    h, w = frame.size
    st.caption(f"{len(frames)} frames of {w}×{h} px; frame number {frame.number} ({frame.name}), "
               f"{frame.intrinsics_format}; fx {frame.intrinsics[0, 0]:.1f} px, principal point "
               f"({frame.intrinsics[0, 2]:.1f}, {frame.intrinsics[1, 2]:.1f}) px.")
    cols = st.columns(3)
    cols[0].image(image, caption="image", width="stretch")
    cols[1].image(figures.mask_overlay(image, mask), caption="object mask" if mask is not None else "no mask",
                  width="stretch")
    if depth is not None:
        cols[2].plotly_chart(figures.depth_figure([depth], ["depth (0 = invalid)"], columns=1), width="stretch",
                             key="dataset.co3d.depth")
    else:
        cols[2].caption("no depth map")
    fig, caption = figures.cloud_with_cameras_figure(
        points, colors, np.stack([f.intrinsics for f in frames]), np.stack([f.cam_from_world for f in frames]),
        frame.size, [str(f.number) for f in frames], highlight=index, revision=f"co3d-{category}-{sequence}")
    st.plotly_chart(fig, width="stretch", key="dataset.co3d.cloud")
    quality = cloud.get("quality_score")
    st.caption(caption + (f"; point-cloud quality score {quality:.3g}" if quality is not None else ""))
    name = f"co3d-{category}-{sequence}"
    if st.button(f"Import as scene “{name}”", key="dataset.co3d.import", disabled=not submit_allowed()):
        try:
            out, scene_name = scene_destination(name)  # hosted mode: the user's namespace
            scene = co3d.import_sequence(root, category, sequence, out, name=scene_name)
            st.success(f"Scene “{scene.name}” written to `{shown_path(scene.path)}`; pick it in the sidebar.")
        except UserError as error:
            st.error(f"Could not import: {error}")


prepare_tab, co3d_tab = st.tabs(["Prepare a scene", "Browse CO3D"])
with co3d_tab:  # first: the prepare tab may st.stop() the script
    co3d_browser()

with prepare_tab:
    my_scenes_panel()  # hosted mode: share or delete your scenes
    SOURCES = ("Bundled sample", "Upload images", "Upload a video")
    source = st.radio("Source", SOURCES, horizontal=True, key="dataset.source")
    name = st.text_input("Scene name", value="my-object", key="dataset.name")

    images_upload = video_upload = None
    frames = DEFAULT_FRAMES
    if source == "Upload images":
        images_upload = st.file_uploader("Images (JPEG/PNG, one camera setting)", type=["png", "jpg", "jpeg"],
                                         accept_multiple_files=True, key="dataset.images")
    elif source == "Upload a video":
        video_upload = st.file_uploader("Video (mp4/mov)", type=[s.lstrip(".") for s in VIDEO_SUFFIXES],
                                        key="dataset.video")
        frames = int(st.number_input("Frames sampled uniformly", min_value=MIN_VIEWS, max_value=400,
                                     value=DEFAULT_FRAMES, key="dataset.frames"))
    else:
        st.caption("The bundled toy scene's 42 views (480×640, exact ground truth).")

    with st.expander("COLMAP and stereo options"):
        advanced = st.toggle("Show advanced options", key="dataset.advanced")
        left, right = st.columns(2)
        with left:
            options = option_widgets(PrepareOptions, "dataset.options", show_advanced=advanced)


    def _store(upload_files, kind: str):
        """Store the uploads under the cache before any work (kept whatever happens next)."""
        files = [(f.name, f.getvalue()) for f in upload_files]
        key = (kind, tuple((n, len(d)) for n, d in files))
        stored = st.session_state.get("dataset.stored")
        if stored and stored[0] == key:
            return stored[1]
        root, generated = upload_destination(sum(len(d) for _, d in files))
        batch = store_uploads(files, kind, root=root, generated_names=generated)
        st.session_state["dataset.stored"] = (key, batch)
        return batch


    # --------------------------------------------------------------------------- inputs
    batch = None
    try:
        if images_upload:
            batch = _store(images_upload, "images")
            st.caption(f"{len(batch.names)} image(s) stored in `{shown_path(batch.folder)}`.")
        elif video_upload is not None:
            batch = _store([video_upload], "video")
            preview_key = (str(batch.folder), frames)
            if st.session_state.get("dataset.preview", (None,))[0] != preview_key:
                sampled, indices, info = sample_video_frames(batch.paths[0], frames)
                st.session_state["dataset.preview"] = (preview_key, sampled, indices, info)
            _, sampled, indices, info = st.session_state["dataset.preview"]
            st.image(preview_strip(sampled), caption=f"{len(sampled)} of {info['total_frames']} frames "
                     f"(uniform; frame indices {indices[0]}…{indices[-1]})")
    except UserError as error:  # DatasetError, LimitError, AccessDenied, QuotaExceeded
        st.error(str(error))
        if batch is not None:
            st.info(f"Your upload is kept in `{shown_path(batch.folder)}`.")
        st.stop()

    ready = source == "Bundled sample" or batch is not None
    if st.button("Prepare scene", type="primary", disabled=not ready or not submit_allowed(), key="dataset.prepare"):
        # On Ray the preparation is a job (it outlives this session; followed below); inline it runs here.
        bar = StreamlitProgress("Preparing") if app_jobs.inline() else None
        try:
            out, name = scene_destination(name)
            provenance, is_video, files = {}, False, None
            if source == "Bundled sample":
                sample = Scene.load(REPO_ROOT / "sample_data" / "toy")
                images, names, files = sample.images, sample.image_names, scene_image_files(sample.path)
                provenance["source"] = "sample_data/toy"
            elif source == "Upload images":
                images, names, notes, files = load_image_files(batch.paths, resize=options.resize,
                                                               names=batch.original_names)
                for note in notes:
                    st.caption(note)
                provenance["source"] = shown_path(batch.folder)
            else:
                _, images, indices, info = st.session_state["dataset.preview"]
                names = [f"frame_{i:06d}.png" for i in indices]
                is_video = True
                provenance.update({"source": shown_path(batch.folder), "frame_indices": indices, **info})
            if bar is None:
                app_jobs.submit(prepare_spec(images, names, out, scene_name=name, options=options, is_video=is_video,
                                             provenance=provenance, files=files), "dataset.job")
            else:
                result = prepare(images, names, out, scene_name=name, options=options, progress=bar.progress,
                                 is_video=is_video, provenance=provenance)
                bar.done("prepared")
                st.session_state["dataset.result"] = str(result.folder)
                st.success(f"Scene “{result.scene.name}” written to `{shown_path(result.folder)}`; pick it in the "
                           "sidebar.")
        except UserError as error:
            if bar is not None:
                bar.clear()
            st.error(f"Could not prepare the scene: {error}")
            if batch is not None:
                st.info(f"Your uploads are kept in `{shown_path(batch.folder)}`; fix the input and try again.")
        except Stopped:
            bar.clear()
            st.warning("Stopped; nothing was kept.")
    if not app_jobs.inline():
        final = app_jobs.follow("dataset.job")
        if final is not None and app_jobs.show_outcome(final, "Preparation"):
            # the sidebar lists scene folders afresh on every run; the new folder is selectable now
            st.session_state["dataset.result"] = final["result"]["scene"]
            st.caption(f"Scene written to `{shown_path(Path(final['result']['scene']))}`; pick it in the sidebar.")
        elif final is not None and final["state"] == "failed" and batch is not None:
            st.info(f"Your uploads are kept in `{shown_path(batch.folder)}`; fix the input and try again.")

    # --------------------------------------------------------------------------- result
    folder = st.session_state.get("dataset.result")
    if not folder or not (Path(folder) / "prepare.json").is_file():
        st.stop()
    folder = Path(folder)
    report = json.loads((folder / "prepare.json").read_text())
    st.subheader(f"Result — {folder.name}")
    cols = st.columns(4)
    cols[0].metric("Registered views", f"{report['registered']}/{report['total']}")
    cols[1].metric("Mean reprojection error", f"{report['mean_reprojection_error_px']:.3f} px")
    cols[2].metric("Sparse points", f"{report['points']:,}")
    cols[3].metric("Mean track length", f"{report['mean_track_length']:.2f}")
    if report["unregistered"]:
        st.warning("Views that did not register: " + ", ".join(report["unregistered"]))
    setting = f" ({report['dense']['setting']})" if report["dense"].get("setting") else ""
    st.caption(f"Matching: {report['matcher']}; dense: {report['dense']['method']}{setting}, "
               f"{report['dense'].get('points', 0):,} points; seconds per stage: "
               + ", ".join(f"{k} {v:.1f}" for k, v in report["stage_seconds"].items()))
    with st.expander("COLMAP log"):
        st.code("\n".join(report.get("log", [])) or "(empty)")

    scene = Scene.load(folder)
    crop = load_crop(folder)
    try:
        cloud, cloud_colors = load_dense(folder)
    except DatasetError:
        cloud, cloud_colors = scene.gt_points, scene.gt_colors

    st.subheader("Object crop")
    st.caption("Proposed from the intersection of the optical axes and the points near it, standing on the support "
               "plane when one is found. Adjust it, then store the points inside as the scene's ground truth.")
    cols = st.columns(3)
    shift = [cols[i].slider(f"Move {axis} (× half size)", -1.0, 1.0, 0.0, 0.05, key=f"dataset.shift{axis}")
             for i, axis in enumerate("xyz")]
    scale = [cols[i].slider(f"Scale {axis}", 0.3, 2.0, 1.0, 0.05, key=f"dataset.scale{axis}") for i, axis in
             enumerate("xyz")]
    box = crop.adjusted(shift, scale) if crop is not None else None
    fig, caption = figures.crop_figure(cloud, cloud_colors, box, scene, revision=f"dataset-{folder.name}")
    st.plotly_chart(fig, width="stretch")
    st.caption(caption + "; COLMAP's frame, arbitrary scale.")

    cols = st.columns(2)
    if cols[0].button("Store the crop as ground truth", key="dataset.apply_crop", disabled=box is None):
        try:
            count = apply_crop(folder, box)
            st.success(f"Stored {count:,} object points as the ground truth of “{scene.name}”.")
        except DatasetError as error:
            st.error(str(error))
    if (folder / "object.ply").is_file():
        cols[1].download_button("Download the object cloud (PLY)", (folder / "object.ply").read_bytes(),
                                file_name=f"{folder.name}_object.ply", mime="application/octet-stream",
                                key="dataset.download")
