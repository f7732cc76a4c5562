"""A minimal Streamlit browser for tests: one websocket session that runs one page of a live server
and collects what it shows (no browser; the protocol's protobuf messages, as the web client sends).

:func:`browse` returns a :class:`Seen`: the page's text (markdown, captions, widget labels, alerts
with their kind), its exceptions and its data frames (as lists of row dicts).
"""
from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field


@dataclass
class Seen:
    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)        # st.error boxes
    exceptions: list[str] = field(default_factory=list)    # uncaught exceptions shown on the page
    frames: list[list[dict]] = field(default_factory=list)
    finished: bool = False

    def all_text(self) -> str:
        return "\n".join(self.texts)


def _frame(data: bytes) -> list[dict]:
    import pyarrow as pa

    if not data:
        return []
    return pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist()


def _collect(element, seen: Seen) -> None:
    kind = element.WhichOneof("type")
    if kind == "exception":
        seen.exceptions.append(f"{element.exception.type}: {element.exception.message}")
    elif kind == "alert":
        seen.texts.append(element.alert.body)
        if element.alert.format == element.alert.ERROR:
            seen.errors.append(element.alert.body)
    elif kind in ("markdown", "heading"):
        seen.texts.append(getattr(element, kind).body)
    elif kind == "dataframe":
        seen.frames.append(_frame(element.dataframe.arrow_data.data))
    elif kind is not None:
        label = getattr(getattr(element, kind), "label", None)
        if isinstance(label, str) and label:
            seen.texts.append(label)


async def browse(port: int, page: str, timeout: float = 120.0) -> Seen:
    """Open a session on ``127.0.0.1:port``, run ``page`` (its URL path, e.g. ``metrics``) once and
    return what it showed. Raises ``TimeoutError`` when the run does not finish in ``timeout`` s."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    seen = Seen()
    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=None, open_timeout=timeout) as socket:
        request = BackMsg()
        request.rerun_script.query_string = ""
        request.rerun_script.page_name = page
        await socket.send(request.SerializeToString())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            data = await asyncio.wait_for(socket.recv(), max(deadline - loop.time(), 0.01))
            message = ForwardMsg()
            message.ParseFromString(data)
            kind = message.WhichOneof("type")
            if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                _collect(message.delta.new_element, seen)
            elif kind == "script_finished":
                status = message.script_finished
                if status == message.FINISHED_EARLY_FOR_RERUN:   # navigation reruns the script once
                    seen = Seen()
                elif status != message.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                    seen.finished = status == message.FINISHED_SUCCESSFULLY
                    return seen
