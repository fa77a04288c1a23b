"""Download exactly the wheels the GPU acceptance needs on the device machine, into an ignored
folder of the checkout (``.whl/``) that the device tool carries.

The device machine has Python 3.12 with torch (CUDA), numpy, einops, rich, psutil, scipy,
joblib, numba, scikit-learn, requests, matplotlib and torchaudio, and no network. What
whisperjav-enhance and the acceptance need beyond that is listed in WHEELS, pinned to the
versions the test suite runs here, one version each (two versions of one package stop the whole
install), for CPython 3.12 on manylinux x86-64, without dependencies (``--no-deps``: every needed
dependency is named here). The total must stay well under the 64 MiB the working tree may weigh
on the way to the device (LIMIT_MIB).

    python benchmarks/fetch_wheels.py            # here, with a package registry
    # there (benchmarks/README.md has the whole command):
    python3 -m pip install --no-index --find-links .whl --no-deps --target /tmp/site \\
        -r .whl/requirements.txt
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".whl"          # ignored (.gitignore: /.whl/)
PYTHON_VERSION = "3.12"       # the device machine's python3
# pip matches manylinux tags exactly: every tag a wheel of these packages may carry.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
LIMIT_MIB = 32.0              # "well under" the 64 MiB the tree and the wheels share
TIMEOUT_S = 600.0

# requirement -> why the device needs it
WHEELS = {
    "soundfile==0.14.0": "whisperjav_enhance: reads and writes the scenes (bundles libsndfile)",
    "cffi==2.1.1": "soundfile's binding (and cryptography's)",
    "pycparser==3.12": "cffi",
    "soxr==1.1.0": "whisperjav_enhance: resampling to and from each network's rate",
    "multiprocess==0.70.19": "whisperjav_enhance: the workers",
    "dill==0.4.1": "multiprocess's pickler",
    "clearvoice==0.1.2": "MossFormer2's network class (the package only, never its pins)",
    "rotary-embedding-torch==0.9.1": "MossFormer2's network",
    "torchinfo==1.8.0": "imported by clearvoice's network module",
    "modelscope==1.40.2": "ZipEnhancer's network class",
    "modelscope-hub==0.5.1": "imported by modelscope at start",
    "cryptography==50.0.2": "imported by modelscope-hub at start",
    "addict==2.4.0": "modelscope's configuration objects",
    "librosa==0.11.0": "the status quo: clearvoice.utils.decode_batch imports it",
    "audioread==3.1.0": "librosa",
    "decorator==5.3.1": "librosa",
    "pooch==1.9.0": "librosa",
    "platformdirs==4.14.8": "pooch",
    "pydub==0.25.1": "the status quo: clearvoice's dataloader (imported by decode_batch)",
}


def _name(requirement: str) -> str:
    return requirement.split("==")[0].lower().replace("-", "_")


def download(dest: Path) -> list[Path]:
    """Fetch every wheel of WHEELS into ``dest`` (emptied of wheels first, so exactly one
    version of each is there)."""
    with tempfile.TemporaryDirectory(prefix="wje-wheels-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--implementation", "cp",
               *[a for p in PLATFORMS for a in ("--platform", p)], "-d", tmp, *WHEELS]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        if r.returncode != 0:
            raise SystemExit(f"pip download failed:\n{r.stderr[-3000:]}")
        got = sorted(Path(tmp).glob("*.whl"))
        names = {p.name.split("-")[0].lower() for p in got}
        missing = [req for req in WHEELS if _name(req) not in names]
        if missing or len(got) != len(WHEELS):
            raise SystemExit(f"expected {len(WHEELS)} wheels, got {len(got)}; missing: {missing}")
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.whl"):
            old.unlink()
        for w in got:
            shutil.move(str(w), dest / w.name)
    (dest / "requirements.txt").write_text(
        "".join(f"{req}  # {why}\n" for req, why in WHEELS.items()))
    return sorted(dest.glob("*.whl"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", default=str(DEST), help=f"folder for the wheels (default: {DEST})")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB,
                   help=f"refuse when the wheels weigh more (default: {LIMIT_MIB:g})")
    args = p.parse_args(argv)
    wheels = download(Path(args.dest))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"{total / 2**20:7.2f} MiB  total, {len(wheels)} wheels in {args.dest}")
    if total > args.limit_mib * 2**20:
        print(f"error: {total / 2**20:.1f} MiB is over the {args.limit_mib:g} MiB limit: the "
              "working tree and the wheels travel together under 64 MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
