"""README's install lines, run as printed in a fresh venv: a wheel built from the checkout, the
lines for WhisperJAV's venv (numpy>=2 and its own torch already there) and the standalone lines,
with enhancements by the installed command in between. Also: scripts/install.sh stops with pip's
error when a step really fails.

The slow tests need pip to reach the package registry (CI has it); torch comes through
constraints.txt (on this project's machines a CPU build on local disk).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import soundfile as sf

from conftest import write_tone

REPO = Path(__file__).resolve().parent.parent
SECTION = "### Installing, and living beside WhisperJAV"
# One pip step can download and unpack torch on a cold cache; one CLI run is a 0.5 s scene.
PIP_TIMEOUT_S = 600
CLI_TIMEOUT_S = 300
# The whole of one venv's sequence; pytest's default per-test limit is shorter.
TEST_TIMEOUT_S = 1500
WHISPERJAV_EXTRAS = "[deepfilternet,mossformer2,zipenhancer]"
# What the mossformer2 and zipenhancer backends import from their extras' packages.
OTHER_BACKENDS_IMPORTS = ("import einops, rotary_embedding_torch, torchinfo; "
                          "from modelscope.models.audio.ans.zipenhancer import ZipEnhancer")

# Each command of README's install block, by role; the block must hold exactly these.
ROLES = {
    "build": re.compile(r"^pip wheel --no-deps -w dist \.$"),
    "standalone_checkout": re.compile(r"^pip install -c constraints\.txt '\.\[all\]'$"),
    "standalone_wheel": re.compile(r"^pip install -c constraints\.txt 'dist/(\S+\.whl)\[all\]'$"),
    "clearvoice": re.compile(r"^pip install --no-deps 'clearvoice\S*'$"),
    "keep": re.compile(r"^python -c .* > keep\.txt$"),
    "whisperjav_checkout": re.compile(
        r"^pip install -c keep\.txt '\.%s'$" % re.escape(WHISPERJAV_EXTRAS)),
    "whisperjav_wheel": re.compile(
        r"^pip install -c keep\.txt 'dist/(\S+\.whl)%s'$" % re.escape(WHISPERJAV_EXTRAS)),
}


def readme_install_commands() -> dict[str, str]:
    """README's install block as {role: command line exactly as printed}."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README has no section {SECTION!r}"
    section = re.split(r"\n#{2,3} ", text.split(SECTION, 1)[1], maxsplit=1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the install section has no ```bash block"
    found: dict[str, str] = {}
    for raw in block.group(1).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        command = re.sub(r"\s+#.*$", "", line)   # a trailing comment explains; it runs too
        roles = [role for role, pattern in ROLES.items() if pattern.match(command)]
        assert len(roles) == 1, f"README install line that no test runs: {line}"
        assert roles[0] not in found, f"README shows two {roles[0]} lines"
        found[roles[0]] = line
    missing = set(ROLES) - set(found)
    assert not missing, f"README's install block lacks the {sorted(missing)} line(s)"
    return found


def expected_wheel_name() -> str:
    """The file `pip wheel` makes from pyproject's name and version (tomllib is 3.11+ only)."""
    project = (REPO / "pyproject.toml").read_text().split("[project]", 1)[1]
    name, version = (re.search(rf'^{key}\s*=\s*"([^"]+)"', project, re.M).group(1)
                     for key in ("name", "version"))
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def test_readme_install_lines_name_the_wheel_the_build_line_makes():
    commands = readme_install_commands()
    for role in ("standalone_wheel", "whisperjav_wheel"):
        command = re.sub(r"\s+#.*$", "", commands[role])
        assert ROLES[role].match(command).group(1) == expected_wheel_name(), commands[role]


# -- a throwaway checkout and a fresh venv ------------------------------------------------------
def copy_checkout(dest: Path) -> Path:
    """What building the package needs, copied from the working tree (builds write into it)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(REPO / name, dest / name)
    (dest / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "install.sh", dest / "scripts" / "install.sh")
    for package in REPO.glob("whisperjav_enhance*"):
        if package.is_dir() and not package.name.endswith(".egg-info"):
            shutil.copytree(package, dest / package.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


class Venv:
    """A fresh venv with its bin folder first on PATH, as `activate` would leave a shell."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "venv"
        r = subprocess.run([sys.executable, "-m", "venv", str(self.dir)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        self.bin = self.dir / "bin"
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
               and not k.startswith("WHISPERJAV_ENHANCE_")}
        caches = root / "caches"   # empty: auto finds no MossFormer2/ZipEnhancer weights
        env.update(PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.dir),
                   PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HOME=str(caches / "hf"),
                   HF_HUB_CACHE=str(caches / "hf" / "hub"), MODELSCOPE_CACHE=str(caches / "ms"),
                   HF_HUB_OFFLINE="1")
        self.env = env

    def sh(self, line: str, cwd: Path, timeout: float = PIP_TIMEOUT_S) -> str:
        """Run one shell line; it must succeed and print no ERROR line. Returns its output."""
        r = subprocess.run(["bash", "-c", f"set -euo pipefail\n{line}"], cwd=cwd, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"{line}\nexit {r.returncode}\n{out}"
        errors = [l for l in out.splitlines() if l.startswith("ERROR")]
        assert not errors, f"{line}\nprinted error lines:\n" + "\n".join(errors)
        return out

    def py(self, code: str, cwd: Path) -> str:
        return self.sh(f"python -c {shlex.quote(code)}", cwd, timeout=120).strip()

    def installed(self) -> dict[str, str]:
        out = self.sh("python -m pip list --format=freeze", self.root, timeout=120)
        pairs = (l.split("==", 1) for l in out.splitlines() if "==" in l)
        return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pairs}

    def enhance_one_scene(self, name: str) -> dict:
        """The installed CLI on a 0.5 s scene, from a folder outside the checkout; returns the
        summary after checking the run."""
        scenes = self.root / name / "scenes"
        src = scenes / "scene_0001.wav"
        write_tone(src, 0.5, rate=48_000)
        out = self.root / name / "out"
        r = subprocess.run([str(self.bin / "whisperjav-enhance"), "enhance", str(scenes), "-o",
                            str(out), "--backend", "auto", "--device", "cpu"],
                           cwd=self.root / name, env=self.env, capture_output=True, text=True,
                           timeout=CLI_TIMEOUT_S)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sf.info(str(out / src.name)).frames == sf.info(str(src)).frames
        summary = json.loads((out / "summary.json").read_text())
        assert summary["backend"] == "deepfilternet", summary["backend_note"]
        assert summary["weights"]["origin"] == "bundled"
        assert not summary["weights"]["random_test_weights"]
        assert Path(summary["weights"]["path"]).is_relative_to(self.dir)
        assert (summary["scenes_enhanced"], summary["scenes_failed"]) == (1, 0)
        return summary

    def package_location(self) -> Path:
        where = self.py("import whisperjav_enhance; print(whisperjav_enhance.__file__)",
                        self.root)
        return Path(where)


@pytest.fixture
def scratch():
    """A temporary folder removed at the end (a venv with torch is ~1 GB: pytest's tmp_path
    would keep the last three runs)."""
    root = Path(tempfile.mkdtemp(prefix="wje-install-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_wheel(venv: Venv, src: Path, commands: dict[str, str]) -> Path:
    venv.sh(commands["build"], src)
    wheel = src / "dist" / expected_wheel_name()
    assert wheel.is_file(), sorted(p.name for p in (src / "dist").iterdir())
    return wheel


# -- the tests --------------------------------------------------------------------------------
def resolve_in_an_empty_venv(venv: Venv, line: str, cwd: Path) -> dict[str, str]:
    """What README's pip install ``line`` would install into a venv without torch: pip resolves
    it as if nothing were installed (--dry-run --ignore-installed) and reports its choices."""
    assert line.startswith("pip install ")
    report = venv.root / "resolution.json"
    venv.sh(f"pip install --dry-run --ignore-installed --report {report} -q "
            + line[len("pip install "):], cwd)
    chosen = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
            for item in chosen}


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_readme_install_lines_in_a_fresh_venv(scratch):
    """Every line of README's install block, as printed, in one fresh venv:
    1. like WhisperJAV's (numpy>=2, a torch already there): the wheel and the checkout lines add
       the package without changing an installed version, and the installed command enhances a
       scene, with numpy 2 and then numpy 1;
    2. the standalone lines: in an empty venv they would take the torch constraints.txt pins
       (never PyPI's newest, a CUDA build), clearvoice goes in last so nothing prints an ERROR,
       and the MossFormer2 network class imports from the no-deps clearvoice."""
    commands = readme_install_commands()
    src = copy_checkout(scratch / "src")
    venv = Venv(scratch)
    # WhisperJAV's venv, as far as this package is concerned (its clearvoice fork is from git).
    venv.sh("pip install -q -c constraints.txt torch 'numpy>=2'", src)
    before = venv.installed()
    assert before["numpy"].startswith("2."), before["numpy"]

    build_wheel(venv, src, commands)
    venv.sh(commands["keep"], src)
    assert set((src / "keep.txt").read_text().split()) == {
        f"numpy=={before['numpy']}", f"torch=={before['torch']}"}

    venv.sh(commands["whisperjav_wheel"], src)
    after = venv.installed()
    assert {k: after.get(k) for k in before} == before, "installing changed WhisperJAV's packages"
    assert "clearvoice" not in after
    assert venv.package_location().is_relative_to(venv.dir)
    venv.enhance_one_scene("numpy2")
    # What the other backends' extras bring imports with numpy 2 (their weights are not here;
    # clearvoice itself is WhisperJAV's fork there).
    venv.py(OTHER_BACKENDS_IMPORTS, venv.root)

    venv.sh("pip uninstall -q -y whisperjav-enhance", src)
    venv.sh(commands["whisperjav_checkout"], src)
    after = venv.installed()
    assert {k: after.get(k) for k in before} == before, "installing changed WhisperJAV's packages"
    assert venv.package_location().is_relative_to(venv.dir)
    assert after["whisperjav-enhance"] in venv.sh("whisperjav-enhance --version", venv.root)

    venv.sh("pip install -q 'numpy<2'", venv.root)
    assert venv.py("import numpy; print(numpy.__version__)", venv.root).startswith("1.")
    venv.enhance_one_scene("numpy1")
    venv.py(OTHER_BACKENDS_IMPORTS, venv.root)

    # Standalone. A second venv would cost another GB of torch on disk; pip's resolution says
    # what the line would take into an empty one.
    pinned = next(l.split("==", 1)[1].strip() for l in (src / "constraints.txt").read_text()
                  .splitlines() if l.startswith("torch=="))
    for role in ("standalone_wheel", "standalone_checkout"):
        chosen = resolve_in_an_empty_venv(venv, commands[role], src)
        assert chosen["torch"].split("+")[0] == pinned, (role, chosen["torch"])
        assert "clearvoice" not in chosen and "torchaudio" not in chosen, role

    venv.sh("pip uninstall -q -y whisperjav-enhance", src)
    venv.sh(commands["standalone_wheel"], src)
    venv.sh(commands["clearvoice"], src)
    installed = venv.installed()
    assert "clearvoice" in installed and "torchaudio" not in installed
    assert venv.package_location().is_relative_to(venv.dir)
    assert venv.py("from whisperjav_enhance.backends.mossformer2 import NETWORK_SUBMODULE, "
                   "import_clearvoice_submodule as imp; "
                   "print(imp(NETWORK_SUBMODULE).MossFormer2_SE_48K.__name__)",
                   venv.root) == "MossFormer2_SE_48K"

    venv.sh("pip uninstall -q -y whisperjav-enhance clearvoice", src)
    venv.sh(commands["standalone_checkout"], src)
    venv.sh(commands["clearvoice"], src)
    assert venv.installed()["torch"] == before["torch"]
    assert venv.package_location().is_relative_to(venv.dir)
    venv.enhance_one_scene("standalone")


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_install_script_stops_with_pips_error_on_a_real_failure(scratch):
    """A constraint nothing can satisfy: scripts/install.sh prints pip's ERROR, names the failing
    step, exits non-zero and runs no later step (clearvoice is not installed)."""
    src = copy_checkout(scratch / "src")
    (src / "constraints.txt").write_text("torch==0.0.1\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    r = subprocess.run(["bash", "scripts/install.sh"], cwd=src, env=env, capture_output=True,
                       text=True, timeout=PIP_TIMEOUT_S)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert re.search(r"^ERROR: .*conflicting dependencies", out, re.M), out
    assert "scripts/install.sh: '.venv/bin/python -m pip install" in r.stderr, r.stderr
    assert "failed (exit" in r.stderr
    site = next((src / ".venv" / "lib").glob("python*/site-packages"))
    assert not (site / "clearvoice").exists()
