#!/usr/bin/env python3
"""Makes the example scenes: short noisy speech clips (``scenes/``) and the clean speech in each
(``clean/``, same file names), plus ``examples.json`` describing them.

Speech is synthetic (Debian's espeak-ng, so no recording's licence is involved), resampled from
espeak-ng's 22.05 kHz to 48 kHz with soxr; noise is generated here from fixed seeds, so running
the script again gives the same files. The generated WAVs are committed, so only regenerating
them needs espeak-ng (``apt-get install -y espeak-ng``); the noise and mixing need only numpy,
soundfile and soxr.

SNR is the ratio of the speech's power to the noise's power over the whole clip (the clip is the
trimmed utterance plus a short margin, so nearly all of it is speech). The clean reference is
exactly the speech component of the noisy file (both are scaled together to leave headroom), so
it can serve as the target of SI-SDR, PESQ and STOI.

    python examples/make_examples.py            # writes next to this script
    python examples/make_examples.py -o /tmp/ex # somewhere else
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE_HZ = 48_000
ESPEAK_RATE_HZ = 22_050         # what espeak-ng writes
SPEECH_RMS_DBFS = -23.0         # level of the clean speech before headroom scaling
PEAK_LIMIT = 10 ** (-1.0 / 20)  # the noisy mix peaks at most at -1 dBFS
TRIM_BELOW_DB = -40.0           # relative to the utterance's peak: what counts as silence
MARGIN_S = 0.15                 # silence kept before and after the utterance
MAX_TOTAL_BYTES = 2 * 1024 * 1024  # everything generated must stay small enough for the repo
WORDS_PER_MINUTE = 160          # espeak-ng speed; keeps every clip near 2 s


@dataclass(frozen=True)
class Scene:
    name: str          # file name in scenes/ and clean/
    text: str          # what is said
    voice: str         # espeak-ng voice (language + variant)
    pitch: int         # espeak-ng pitch, 0-99
    noise: str         # "white", "pink", "babble" or "hum"
    snr_db: float      # speech power over noise power for the whole clip
    seed: int          # noise generator seed


SCENES = (
    Scene("demo_scene_0001.wav", "Please keep your voice down now.", "en-us", 50, "white", 0.0, 1),
    Scene("demo_scene_0002.wav", "Where did you put the keys to the car?", "en-us+f3", 60, "pink", 5.0, 2),
    Scene("demo_scene_0003.wav", "ありがとう。また あした ね。", "ja", 55, "babble", 5.0, 3),
    Scene("demo_scene_0004.wav", "The train leaves at seven tonight.", "en-us+m3", 40, "hum", 0.0, 4),
    Scene("demo_scene_0005.wav", "I will call you back in five minutes.", "en+f2", 65, "white", 10.0, 5),
)

# Talkers mixed into babble noise: other voices saying other things.
BABBLE = (
    ("en-us+m1", 35, "Did anyone see the game last night, it was a long one."),
    ("en-us+f4", 70, "I think we should order more coffee for the office."),
    ("en+m4", 45, "The weather turned cold again this afternoon."),
    ("en-us+f1", 60, "She said the package would arrive on Monday morning."),
)


def espeak(text: str, voice: str, pitch: int) -> np.ndarray:
    """Synthesise ``text`` and return it as float32 at RATE_HZ."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is needed to regenerate the examples: apt-get install -y espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run([exe, "-v", voice, "-p", str(pitch), "-s", str(WORDS_PER_MINUTE),
                        "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(str(wav), dtype="float32")
    if rate != ESPEAK_RATE_HZ:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE_HZ}")
    return soxr.resample(audio, rate, RATE_HZ, quality="HQ").astype(np.float32)


def trim(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence, keeping MARGIN_S on each side."""
    level = np.abs(audio)
    loud = np.flatnonzero(level > level.max() * 10 ** (TRIM_BELOW_DB / 20))
    margin = int(MARGIN_S * RATE_HZ)
    return audio[max(0, loud[0] - margin):loud[-1] + 1 + margin]


def set_rms(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    return (audio * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum, shaped in the frequency domain (DC removed)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE_HZ)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    return np.fft.irfft(spec, n)


def babble(n: int, rng: np.random.Generator) -> np.ndarray:
    """Several other talkers at once, each looped from a random offset."""
    out = np.zeros(n)
    for voice, pitch, text in BABBLE:
        talk = set_rms(trim(espeak(text, voice, pitch)), -23.0)
        loop = np.tile(talk, n // talk.size + 2)
        start = int(rng.integers(0, talk.size))
        out += loop[start:start + n]
    return out


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 Hz and harmonics) over brown (1/f^2) rumble, like a fan near a microphone."""
    t = np.arange(n) / RATE_HZ
    tone = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE_HZ)
    spec[1:] /= np.maximum(f[1:], 20.0)  # 1/f amplitude = 1/f^2 power, flattened below 20 Hz
    spec[0] = 0
    brown = np.fft.irfft(spec, n)
    return tone / np.std(tone) + brown / np.std(brown)


def make_noise(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return pink(n, rng)
    if kind == "babble":
        return babble(n, rng)
    if kind == "hum":
        return hum(n, rng)
    raise ValueError(f"unknown noise {kind!r}")


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Noisy mix at ``snr_db`` and the matching clean reference, scaled together for headroom."""
    p_s = np.mean(speech.astype(np.float64) ** 2)
    p_n = np.mean(noise ** 2)
    noise = noise * np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    noisy = speech + noise
    gain = min(1.0, PEAK_LIMIT / np.max(np.abs(noisy)))
    return (noisy * gain).astype(np.float32), (speech * gain).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).resolve().parent,
                    help="folder that receives scenes/, clean/ and examples.json")
    args = ap.parse_args(argv)
    (args.out / "scenes").mkdir(parents=True, exist_ok=True)
    (args.out / "clean").mkdir(parents=True, exist_ok=True)
    meta, total = [], 0
    for sc in SCENES:
        speech = set_rms(trim(espeak(sc.text, sc.voice, sc.pitch)), SPEECH_RMS_DBFS)
        noisy, clean = mix(speech, make_noise(sc.noise, speech.size, sc.seed), sc.snr_db)
        for sub, audio in (("scenes", noisy), ("clean", clean)):
            path = args.out / sub / sc.name
            sf.write(str(path), audio, RATE_HZ, subtype="PCM_16")
            total += path.stat().st_size
        meta.append({**asdict(sc), "seconds": round(speech.size / RATE_HZ, 3)})
        print(f"{sc.name}: {speech.size / RATE_HZ:.2f} s, {sc.noise} noise at {sc.snr_db:g} dB SNR")
    (args.out / "examples.json").write_text(json.dumps(
        {"sample_rate": RATE_HZ, "subtype": "PCM_16", "made_by": "examples/make_examples.py",
         "espeak_ng": _espeak_version(), "snr": "speech power / noise power over the whole clip",
         "scenes": meta}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(SCENES)} scenes, {total / 1024:.0f} KiB of WAV in {args.out}")
    if total > MAX_TOTAL_BYTES:
        print(f"error: {total} bytes is over the {MAX_TOTAL_BYTES}-byte budget; shorten the texts",
              file=sys.stderr)
        return 1
    return 0


def _espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    return out.split("Data at")[0].strip()


if __name__ == "__main__":
    sys.exit(main())
