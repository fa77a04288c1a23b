"""What `models` and `doctor` report (whisperjav_enhance.inventory) and how the CLI renders a
weights download (cli.Renderer): the reports in-process, the renderer on an 80-column terminal
and on plain output."""

from __future__ import annotations

import io
import re
import importlib.util
import sys

import pytest
from rich.console import Console

from whisperjav_enhance import inventory, weights
from whisperjav_enhance.backends import CANONICAL, backend_class
from whisperjav_enhance.backends.base import BackendOption
from whisperjav_enhance.cli import Renderer as _Renderer
from whisperjav_enhance.events import DownloadFinished, DownloadProgress, DownloadStarted


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                weights.MOSSFORMER2.env_var, weights.ZIPENHANCER.env_var):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_weights_report_where_it_looked_and_how_to_get_them(caches, monkeypatch):
    (r,) = inventory.models_report(["mossformer2"])
    assert r["status"] == "no weights" and not r["usable"]
    assert any(str(caches / "hf" / "hub") in place for place in r["searched"])
    assert r["source"] == {"hub": "huggingface", "repo_id": weights.MOSSFORMER2.repo_id,
                           "page": weights.MOSSFORMER2.page}
    assert r["download"] == {"possible": True, "why_not": None}
    assert "models --download mossformer2" in r["how_to_get"]
    assert "Get them" not in r["description"]          # the hint is not said twice
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (r,) = inventory.models_report(["mossformer2"])
    assert r["download"]["possible"] is False and "HF_HUB_OFFLINE" in r["download"]["why_not"]


def test_usable_backend_reports_its_weights(caches):
    from whisperjav_enhance.backends.zipenhancer import ZipEnhancerBackend

    folder = ZipEnhancerBackend.write_random_weights(caches / "zip")
    (r,) = inventory.models_report(["zipenhancer"], str(folder))
    assert r["usable"] and r["status"] == "usable" and r["origin"] == "explicit"
    assert r["weights"] == str(folder) and r["random_test_weights"] is True
    everything = inventory.models_report()
    assert [e["backend"] for e in everything][:len(CANONICAL)] == list(CANONICAL)
    assert {e["backend"]: e["usable"] for e in everything}["passthrough"] is True


def test_declared_options_are_listed():
    for name in CANONICAL:
        cls = backend_class(name)
        (r,) = inventory.models_report([name])
        assert r["options"] == [inventory.option_report(o) for o in cls.OPTIONS]
    option = BackendOption("atten_lim_db", float, 100.0, "attenuation limit", 0.0, 100.0)
    assert inventory.option_report(option) == {
        "key": "atten_lim_db", "type": "float", "default": 100.0, "help": "attenuation limit",
        "minimum": 0.0, "maximum": 100.0, "changes_audio": True, "accepts": "a number in 0..100"}


def test_hosted_enhancers_are_listed_from_whisperjavs_factory(monkeypatch):
    from whisperjav_stub.harness import forget_whisperjav, use_stub

    forget_whisperjav()
    if importlib.util.find_spec("whisperjav") is None:  # WhisperJAV is not installed here
        assert inventory.hosted_reports() == []
    use_stub(monkeypatch)
    try:
        reports = inventory.models_report()
        hosted = {r["backend"]: r for r in reports if r["backend"].startswith("whisperjav:")}
        assert "whisperjav:bs-roformer" in hosted and hosted["whisperjav:bs-roformer"]["usable"]
        assert set(hosted["whisperjav:bs-roformer"]) >= set(reports[0])  # what the renderer reads
        assert not hosted["whisperjav:htdemucs"]["usable"]                # the stub lacks it
        just_one = inventory.models_report(["passthrough"])  # hosted ones come with the full list
        assert [r["backend"] for r in just_one] == ["passthrough"]
    finally:
        forget_whisperjav()


def test_doctor_report(caches, monkeypatch):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = inventory.doctor_report()
    assert report["python"] == sys.version.split()[0]
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    if not report["torch"]["gpus"]:
        assert report["torch"]["nvidia_smi"] == inventory.nvidia_smi()
    assert report["environment"]["HF_HUB_OFFLINE"] == "1"
    assert report["hubs"]["downloads"]["mossformer2"].startswith("HF_HUB_OFFLINE=1")
    assert report["hubs"]["downloads"]["zipenhancer"] == "possible"
    assert report["hubs"]["hf_cache"] == str(caches / "hf" / "hub")
    assert report["packages"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])


# -- rendering a download -----------------------------------------------------------------------
def _events(backend="mossformer2", big="last_best_checkpoint.pt", size=221_529_339):
    yield DownloadStarted(backend, "huggingface", weights.MOSSFORMER2.repo_id,
                          weights.MOSSFORMER2.files, "/cache/hub")
    for done in (0, size // 3, size, size):            # the last one repeated, as clients do
        yield DownloadProgress(backend, big, done, size)
    yield DownloadProgress(backend, "last_best_checkpoint", 24, 24)
    yield DownloadFinished(backend, True, "/cache/hub/models--x/snapshots/abc", 12.5)


def _console(out, terminal: bool) -> Console:
    """An 80-column console made the way the CLI makes its own (cli._err_console)."""
    return Console(file=out, force_terminal=terminal, width=80, soft_wrap=True, highlight=False)


def test_download_renders_as_a_bar_on_a_terminal():
    out = io.StringIO()
    renderer = _Renderer(_console(out, terminal=True), quiet=False, debug=False)
    seen_bar = []
    for event in _events():
        renderer(event)
        seen_bar.append(renderer.download_bar is not None)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).replace("\n", " ")
    assert seen_bar[0] and not seen_bar[-1]            # started with the download, gone after
    assert "downloading mossformer2 weights from huggingface" in text
    assert "last_best_checkpoint.pt" in text and "weights ready" in text
    assert "221.5/221.5 MB" in text                    # the bar reached the full size


def test_download_renders_as_lines_when_not_a_terminal():
    out = io.StringIO()
    renderer = _Renderer(_console(out, terminal=False), quiet=False, debug=False)
    for event in _events():
        renderer(event)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("downloading mossformer2 weights")
    assert sum("last_best_checkpoint.pt: 211 MiB received" in ln for ln in lines) == 1
    assert "  last_best_checkpoint: 24 B received" in lines
    assert lines[-1].startswith("weights ready in /cache/hub/models--x/snapshots/abc (12.5 s")
    assert all(len(ln) <= 80 for ln in lines[1:-1])


def test_quiet_renders_nothing():
    out = io.StringIO()
    renderer = _Renderer(_console(out, terminal=True), quiet=True, debug=False)
    for event in _events():
        renderer(event)
    assert out.getvalue() == "" and renderer.download_bar is None
