"""The "Download" section of a stored run (Metrics page, method pages): one download button per
export format of :data:`core.export.FORMATS`; the file is made only when its button is clicked."""
from __future__ import annotations

import streamlit as st

from core.export import FORMATS, StoredRun, archive, unavailable_reason


def _maker(fmt_name: str, run: StoredRun):
    """A callable making the export's bytes on click (Streamlit runs it off the script thread)."""
    return lambda: archive(fmt_name, run)[1]


def export_buttons(record, scene, key: str, recon=None) -> None:
    """Download buttons for the stored run ``record`` (a :class:`core.store.cache.RunRecord`) of
    ``scene``: COLMAP and nerfstudio as .zip, PLY, GLB and a one-run HTML report. A format the
    run cannot give (no cameras, no points) is shown disabled with the reason as its help.

    ``key`` makes the widget keys unique on the page; ``recon`` is the run's reconstruction when
    the page has loaded it already."""
    run = StoredRun(recon if recon is not None else record.load(), scene, record.method, record.key,
                    record.evaluation, record)
    st.markdown("**Download**")
    columns = st.columns(len(FORMATS))
    for column, fmt in zip(columns, FORMATS.values()):
        reason = unavailable_reason(fmt, run)
        with column:
            st.download_button(fmt.label, data=b"" if reason else _maker(fmt.name, run),
                               file_name=fmt.download_name(run), mime=fmt.mime, key=f"{key}.export.{fmt.name}",
                               help=reason or fmt.description, disabled=reason is not None, on_click="ignore",
                               width="stretch")
