"""What produced an output, as one short string: the resume key.

An output is only as good as the settings that made it. A rerun skips an existing output only when
its recorded fingerprint equals the one the run would write now (outdir.OutputRecords keeps them);
otherwise the scene is redone. The fingerprint covers what changes the audio and nothing else:

- the backend (canonical name) and the identity of its weights (their content, not their path:
  moving a model cache redoes nothing, a different checkpoint redoes everything);
- the output's sample rate (or "input": each scene keeps its own) and sample encoding;
- the clip policy; the backend options that change the audio (BackendOption.changes_audio) and
  window/overlap overrides.

Devices, batch sizes, worker counts and the package version are left out on purpose: they change
speed, not the enhanced samples a scene gets (up to float rounding)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

# Bumped when the meaning of a field changes, so old records stop matching.
FINGERPRINT_VERSION = 1
# Bytes hashed from each end of each weights file: enough to tell checkpoints apart (their
# headers and first tensors differ) without reading GiBs at every start.
WEIGHTS_HASH_BYTES = 1 << 20
# Files of a weights folder taken into its identity at most (model folders hold a handful).
WEIGHTS_MAX_FILES = 256

_identity_cache: dict[tuple, str] = {}


def output_settings(*, backend: str, weights_id: str, output_sample_rate: int | None,
                    output_subtype: str, clip: str, audio_options: Mapping[str, object]) -> dict:
    """The settings an output depends on, as a plain JSON-able dict (kept beside each record so
    a rerun can say what changed)."""
    return {"v": FINGERPRINT_VERSION, "backend": str(backend), "weights": str(weights_id),
            "output_sample_rate": int(output_sample_rate) if output_sample_rate else "input",
            "output_subtype": str(output_subtype), "clip": str(clip),
            "options": {str(k): _plain(v) for k, v in sorted(audio_options.items())}}


def fingerprint(settings: Mapping) -> str:
    """Short stable digest of :func:`output_settings`."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return f"v{FINGERPRINT_VERSION}-" + hashlib.sha256(text.encode("ascii")).hexdigest()[:20]


def changed_settings(old: Mapping | None, new: Mapping) -> list[str]:
    """Names of the settings that differ (for "redone: backend, output_sample_rate")."""
    if not isinstance(old, Mapping):
        return ["unknown"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _plain(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 4 and 4.0 seconds are one setting
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def weights_identity(path: str | os.PathLike | None) -> str:
    """A content digest of a weights file or folder ("none" for backends without weights).

    Each file contributes its name relative to the folder, its size and a hash of its first and
    last :data:`WEIGHTS_HASH_BYTES`; results are cached per process by (path, size, mtime)."""
    if path is None:
        return "none"
    root = Path(path)
    files = [root] if root.is_file() else sorted(
        (p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.relative_to(root).as_posix())[:WEIGHTS_MAX_FILES]
    digest = hashlib.sha256()
    for f in files:
        name = f.name if f == root else f.relative_to(root).as_posix()
        digest.update(f"{name}\0{_file_digest(f)}\0".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20] if files else "missing"


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _identity_cache:
        h = hashlib.sha256(str(st.st_size).encode())
        with open(path, "rb") as fh:
            h.update(fh.read(WEIGHTS_HASH_BYTES))
            if st.st_size > 2 * WEIGHTS_HASH_BYTES:
                fh.seek(-WEIGHTS_HASH_BYTES, os.SEEK_END)
            h.update(fh.read(WEIGHTS_HASH_BYTES))
        _identity_cache[key] = h.hexdigest()
    return _identity_cache[key]


__all__ = ["FINGERPRINT_VERSION", "output_settings", "fingerprint", "changed_settings",
           "weights_identity"]
