"""Write sip_core/audio/data: the voice prompts (espeak-ng, sox) and the music-on-hold loop.

Run through ``scripts/make-prompts``. For each prompt of ``sip_core.audio.assets.PROMPT_TEXTS``:
espeak-ng speaks the text (American English voice, a little slower than its default), sox trims
the silence around it, filters it to the telephone band, normalises it to -3 dBFS peak, adds a
short lead-in and tail (the pause between words when prompts are played one after another) and
resamples it to 8 and 16 kHz, without dither. The samples are stored as raw G.711 µ-law made by
sip_core's own encoder (so what the PBX decodes at load is exactly what was written), compressed
with xz.

The music is synthesised here, not recorded: a slow progression of four soft major and minor
chords (C, A minor, F, G) cross-fading into each other, each note a sine with one quiet octave
partial; the last chord fades into the first, so the loop has no seam, and there is no licence
to worry about.

Everything is deterministic: running the script again gives the same bytes for the same tools.
"""

from __future__ import annotations

import argparse
import lzma
import math
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

from sip_core.audio.assets import PROMPT_TEXTS
from sip_core.audio.clip import SUPPORTED_RATES
from sip_core.audio.g711 import ulaw_encode

DATA = Path(__file__).resolve().parents[2] / "sip_core" / "audio" / "data"
VOICE = "en-us"
WORDS_PER_MINUTE = "150"
LEAD_IN_S = "0.05"
TAIL_S = "0.10"

# Chords as (frequencies in Hz); each lasts CHORD_S seconds.
CHORDS = (
    (261.63, 329.63, 392.00),  # C major
    (220.00, 261.63, 329.63),  # A minor
    (174.61, 220.00, 261.63),  # F major
    (196.00, 246.94, 293.66),  # G major
)
CHORD_S = 2.0
MUSIC_PEAK = 0.25  # of full scale: background music, well below the prompts


def speak(text: str, rate: int, work: Path) -> array[int]:
    """The text spoken, trimmed, band-limited and normalised, as 16-bit samples at ``rate``."""
    wav = work / "speech.wav"
    raw = work / f"speech-{rate}.raw"
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", WORDS_PER_MINUTE, "-w", str(wav), text], check=True
    )
    # silence (twice, around a reverse) trims both ends; sinc is the telephone band-pass.
    high = "3400" if rate == 8000 else "7000"
    subprocess.run(
        ["sox", "-D", str(wav), "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1",
         "-r", str(rate), str(raw),
         "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse",
         "sinc", f"100-{high}", "norm", "-3", "pad", LEAD_IN_S, TAIL_S, "rate", "-v", str(rate)],
        check=True,
    )  # fmt: skip
    samples = array("h")
    samples.frombytes(raw.read_bytes())
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def music(rate: int) -> array[int]:
    """The loop at ``rate``: chords cross-fading into each other, the last into the first.

    Each chord sounds for CHORD_S plus a cross-fade, with raised-cosine attack and release; the
    fades overlap, and the last chord's release wraps around onto the first chord's attack, so
    the loop plays on without a gap or a click.
    """
    per_chord = int(CHORD_S * rate)
    fade = int(0.5 * rate)
    total = per_chord * len(CHORDS)
    out = [0.0] * total
    for index, chord in enumerate(CHORDS):
        start = index * per_chord - fade // 2
        length = per_chord + fade
        for n in range(length):
            if n < fade:
                envelope = 0.5 - 0.5 * math.cos(math.pi * n / fade)
            elif n >= length - fade:
                envelope = 0.5 - 0.5 * math.cos(math.pi * (length - n) / fade)
            else:
                envelope = 1.0
            t = n / rate
            value = sum(
                math.sin(2 * math.pi * f * t) + 0.2 * math.sin(4 * math.pi * f * t) for f in chord
            )
            out[(start + n) % total] += envelope * value
    peak = max(abs(value) for value in out)
    scale = MUSIC_PEAK * 32767 / peak
    return array("h", [round(value * scale) for value in out])


def write(path: Path, data: bytes) -> int:
    """Store µ-law bytes xz-compressed; returns the size written."""
    packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    path.write_bytes(packed)
    return len(packed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for rate in SUPPORTED_RATES:
            folder = DATA / "prompts" / str(rate)
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.iterdir():
                if stale.name.removesuffix(".ul.xz") not in PROMPT_TEXTS:
                    stale.unlink()
            for name, text in PROMPT_TEXTS.items():
                total += write(folder / f"{name}.ul.xz", ulaw_encode(speak(text, rate, work)))
            (DATA / "music").mkdir(parents=True, exist_ok=True)
            total += write(DATA / "music" / f"{rate}.ul.xz", ulaw_encode(music(rate)))
    print(f"make-prompts: wrote {len(PROMPT_TEXTS)} prompts and the music loop at"
          f" {', '.join(map(str, SUPPORTED_RATES))} Hz into {DATA.relative_to(Path.cwd())}"
          f" ({total / 1024:.0f} KiB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
