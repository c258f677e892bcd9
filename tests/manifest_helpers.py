"""A manifest of N edit requests sharing one small image, for the tests that run the graph with a stand-in actor."""
import io
import json

import PIL.Image

from pipeline import storage as st


def write_manifest(folder: str, n: int) -> str:
    """`folder/manifest.jsonl` with records r0..r{n-1} on `folder/source.png` (32x32); returns its path."""
    buf = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), (90, 120, 200)).save(buf, format="PNG")
    st.write_bytes(f"{folder}/source.png", buf.getvalue())
    lines = [json.dumps({"id": f"r{i}", "image": "source.png", "instruction": "edit"}) for i in range(n)]
    st.write_bytes(f"{folder}/manifest.jsonl", "\n".join(lines).encode())
    return f"{folder}/manifest.jsonl"
