"""Build the committed demo audio of the ``demo_data`` package from extracted Debian/npm packages.

Run ``demo_data/build.sh``: it downloads and extracts the packages into a work folder laid out as
``<work>/x/<debian package>/``, ``<work>/x/0ad-audio/audio/`` (0 A.D.'s audio, unzipped from its
``public.zip``), ``<work>/npm/package/`` (supersonic-scsynth-samples), ``<work>/pylib/`` (tinysoundfont, put
on PYTHONPATH) and ``<work>/versions.tsv`` (package name, version), then calls ``python -m sslam.demo_data.build``
from the repo root. Everything is seeded, so a rebuild from the same package versions reproduces the
manifests, including their PCM hashes.

Sets written (``demo_data/loader.py`` reads them):

* ``pretrain/``: unlabelled chunks (at most 10 s, silent and < 1 s chunks dropped), OGG Vorbis.
* ``events/``: 0AD-17 monophonic events (17 classes by upstream path), FLAC, grouped stratified 80/20 split.
* ``instruments/``: GM instrument families rendered from FluidR3_GM.sf2, FLAC, split by held-out pitches.
* ``mixtures/``: JSONL recipes of 2-3 clip mixtures per labelled set and split.
* ``soundscapes/``: 10 s 0 A.D. ambience backgrounds (Ogg Vorbis, recordings the pre-training corpus does not use,
  split by recording), JSONL recipes of strongly labelled soundscapes (1-4 events of the ``events`` split over a
  background of the same split) and one rendered test soundscape with its ground-truth TSV.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import re
import time
import zlib
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sslam.demo_data.loader import SAMPLE_RATE, pcm_sha256, read_pcm

SEED = 20251126
OGG_COMPRESSION_LEVEL = 0.7  # libsndfile level 0.7 = Vorbis quality 0.3, about 38 kbit/s at 16 kHz mono
SILENCE_DBFS = -50.0
CHUNK_SECONDS = 10.0
MIN_CHUNK_SECONDS = 1.0
TEST_FRACTION = 0.2
ZIP_0AD = "usr/share/games/0ad/mods/public/public.zip"

# ---------------------------------------------------------------------------------------------------
# Shared audio helpers


def decode_16k(path: Path) -> np.ndarray:
    """Decode any soundfile-readable file, average its channels and resample to 16 kHz (float64)."""
    audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    if rate == SAMPLE_RATE:
        return mono
    divisor = gcd(rate, SAMPLE_RATE)
    return resample_poly(mono, SAMPLE_RATE // divisor, rate // divisor)


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """Float waveform to int16 PCM; a waveform that would clip is scaled down to a 0.999 peak first."""
    peak = np.max(np.abs(waveform)) if len(waveform) else 0.0
    if peak >= 1.0:
        waveform = waveform * (0.999 / peak)
    return np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)


def rms_dbfs(waveform: np.ndarray) -> float:
    """RMS level in dB relative to full scale."""
    return 20.0 * np.log10(max(float(np.sqrt(np.mean(np.square(waveform)))), 1e-12))


def write_flac(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def write_ogg(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, SAMPLE_RATE, format="OGG", subtype="VORBIS", compression_level=OGG_COMPRESSION_LEVEL)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def named_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from SEED and a name, independent of Python's hash randomisation."""
    return np.random.default_rng([SEED, zlib.crc32(":".join(map(str, parts)).encode())])


# ---------------------------------------------------------------------------------------------------
# Packages


@dataclass(frozen=True)
class Workspace:
    """The extracted packages of ``build.sh``."""

    root: Path

    def package_root(self, package: str) -> Path:
        if package == "0ad-data":
            return self.root / "x" / "0ad-audio"
        if package == "supersonic-scsynth-samples":
            return self.root / "npm" / "package"
        return self.root / "x" / package

    def upstream_path(self, package: str, path: Path) -> str:
        """Where a file lives in its package (0 A.D. audio: inside public.zip)."""
        relative = path.relative_to(self.package_root(package)).as_posix()
        return f"{ZIP_0AD}:{relative}" if package == "0ad-data" else relative

    def versions(self) -> dict[str, str]:
        with open(self.root / "versions.tsv", encoding="utf-8") as handle:
            return dict(line.rstrip("\n").split("\t") for line in handle if line.strip())


def dep5_licence_patterns(copyright_file: Path) -> list[tuple[str, str]]:
    """``(file pattern, licence)`` stanzas of a machine-readable debian/copyright, in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", copyright_file.read_text(encoding="utf-8")):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", block, re.MULTILINE)
        licence = re.search(r"^License:[ \t]*(\S+)", block, re.MULTILINE)
        if files and licence:
            stanzas.extend((pattern, licence.group(1)) for pattern in files.group(1).split())
    return stanzas


def dep5_licence(stanzas: list[tuple[str, str]], upstream_path: str) -> str | None:
    """Licence of a file by DEP-5 rules (last matching stanza wins); patterns match path suffixes."""
    found = None
    for pattern, licence in stanzas:
        if fnmatch.fnmatchcase(upstream_path, pattern) or fnmatch.fnmatchcase(upstream_path, "*/" + pattern):
            found = licence
    return found


# ---------------------------------------------------------------------------------------------------
# Pre-training corpus


@dataclass(frozen=True)
class PretrainSource:
    """One slice of the pre-training corpus: files under ``folder`` of ``package``, up to ``minutes``."""

    name: str
    package: str
    folder: str
    licence: str | None  # None: per file, from the package's DEP-5 copyright file
    minutes: float | None  # None: everything usable
    chunks_per_file: int = 1
    suffixes: tuple[str, ...] = (".ogg", ".oga", ".wav", ".flac", ".aiff")


PRETRAIN_SOURCES = (
    PretrainSource("0ad_ambient", "0ad-data", "audio/ambient", "CC-BY-SA-3.0", 6.0, chunks_per_file=2),
    PretrainSource("0ad_music", "0ad-data", "audio/music", "CC-BY-SA-3.0", 4.0),
    PretrainSource("wesnoth_music", "wesnoth-1.16-music", "usr/share/games/wesnoth", "GPL-2+", 4.0),
    PretrainSource("fillets_speech_cs", "fillets-ng-data-cs", "usr/share/games/fillets-ng/sound", "GPL-2", 3.0),
    PretrainSource("fillets_speech_nl", "fillets-ng-data-nl", "usr/share/games/fillets-ng/sound", "GPL-2", 3.0),
    PretrainSource("ktuberling_words", "ktuberling-data", "usr/share/ktuberling/sounds", "GPL-2+", 2.5),
    PretrainSource("hydrogen_guitar_strums", "hydrogen-drumkits-effects", "usr/share/hydrogen", "CC-BY-3.0", 2.0),
    PretrainSource("colobot", "colobot-common-sounds", "usr/share/games/colobot", "GPL-3+", 3.0),
    PretrainSource("sound_theme_freedesktop", "sound-theme-freedesktop", "usr/share/sounds", None, None),
    PretrainSource("sound_theme_oxygen", "oxygen-sounds", "usr/share/sounds", "LGPL-3+", None),
    PretrainSource("sound_theme_yaru", "yaru-theme-sound", "usr/share/sounds", "CC-BY-SA-4.0", None),
    PretrainSource("sonic_pi", "supersonic-scsynth-samples", "samples", "CC0-1.0", 3.0),
)


def usable_chunks(waveform: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive 10 s windows of a waveform, without those shorter than 1 s or quieter than -50 dBFS."""
    size, minimum = int(CHUNK_SECONDS * SAMPLE_RATE), int(MIN_CHUNK_SECONDS * SAMPLE_RATE)
    spans = [(start, min(start + size, len(waveform))) for start in range(0, len(waveform), size)]
    return [(a, b) for a, b in spans if b - a >= minimum and rms_dbfs(waveform[a:b]) >= SILENCE_DBFS]


def spread(items: list, count: int) -> list:
    """At most ``count`` items, taken from the centres of ``count`` equal stretches of the list."""
    if len(items) <= count:
        return items
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]


def source_files(workspace: Workspace, source: PretrainSource) -> list[Path]:
    """Audio files of a source in a seeded random order."""
    folder = workspace.package_root(source.package) / source.folder
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in source.suffixes)
    return [files[i] for i in named_rng("pretrain", source.name).permutation(len(files))]


def build_pretrain_source(workspace: Workspace, source: PretrainSource, out_dir: Path, version: str) -> list[dict]:
    """Cut, encode and describe the chunks of one source until its minute budget is reached."""
    stanzas = None
    if source.licence is None:
        copyright_file = workspace.package_root(source.package) / f"usr/share/doc/{source.package}/copyright"
        stanzas = dep5_licence_patterns(copyright_file)
    budget = float("inf") if source.minutes is None else source.minutes * 60 * SAMPLE_RATE
    rows, total = [], 0
    for path in source_files(workspace, source):
        upstream = workspace.upstream_path(source.package, path)
        licence = source.licence or dep5_licence(stanzas, upstream)
        if licence is None:
            continue
        waveform = decode_16k(path)
        for start, end in spread(usable_chunks(waveform), source.chunks_per_file):
            chunk_id = f"{source.name}_{len(rows):04d}"
            relative = f"audio/{source.name}/{chunk_id}.ogg"
            pcm = to_int16(waveform[start:end])
            write_ogg(out_dir / relative, pcm)
            decoded = read_pcm(out_dir / relative)
            rows.append(
                {
                    "id": chunk_id,
                    "path": relative,
                    "split": "train",
                    "source": source.name,
                    "num_samples": len(decoded),
                    "duration_s": round(len(decoded) / SAMPLE_RATE, 4),
                    "start_s": round(start / SAMPLE_RATE, 4),
                    "source_package": source.package,
                    "package_version": version,
                    "upstream_path": upstream,
                    "licence": licence,
                    "pcm_sha256": pcm_sha256(decoded),
                    "source_pcm_sha256": pcm_sha256(pcm),
                }
            )
            total += end - start
        if total >= budget:
            break
    return rows


def build_pretrain(workspace: Workspace, out_dir: Path) -> list[dict]:
    versions = workspace.versions()
    rows = []
    for source in PRETRAIN_SOURCES:
        rows += build_pretrain_source(workspace, source, out_dir, versions[source.package])
    write_csv(out_dir / "manifest.csv", rows)
    return rows


# ---------------------------------------------------------------------------------------------------
# 0AD-17 monophonic events

EVENT_CLASSES = {
    "arrow_impact": ("attack/impact/arrow*",),
    "sling_impact": ("attack/impact/sling_*",),
    "shield_impact": ("attack/impact/shield_*",),
    "melee_swing": ("attack/weapon/sword_attack*", "attack/weapon/spear_attack*", "attack/weapon/pike_attack*"),
    "sword_clash": ("attack/weapon/swordhit*",),
    "ranged_shot": (
        "attack/weapon/bow_attack*",
        "attack/weapon/sling*",
        "attack/weapon/jav_attack*",
        "attack/weapon/arrowfly*",
    ),
    "footsteps": ("actor/singlesteps/fs_*",),
    "human_death": ("actor/human/death/*",),
    "animal": ("actor/fauna/animal/*",),
    "mining": ("resource/mining/mine_*",),
    "woodcutting": ("resource/lumbering/lumber_tree_[0-9][0-9]",),
    "field_gathering": ("resource/gathering/gather_field_[0-9][0-9]",),
    "construction": ("resource/construction/con_*",),
    "speech_greek": ("voice/greek/civ/*",),
    "speech_latin": ("voice/latin/civ/*",),
    "speech_persian": ("voice/persian/civ/*",),
    "speech_napatan": ("voice/napatan/civ/*",),
}


def event_class(relative: str) -> str | None:
    """Class of a 0 A.D. file given its path under ``audio/`` without the ``.ogg`` suffix."""
    matches = [
        name for name, patterns in EVENT_CLASSES.items() if any(fnmatch.fnmatchcase(relative, p) for p in patterns)
    ]
    if len(matches) > 1:
        raise ValueError(f"{relative} matches several event classes: {matches}")
    return matches[0] if matches else None


def take_group(relative: str) -> str:
    """Recording group of an event file: its path without the trailing take marker.

    A take letter after a number is dropped (``swordhit_12a``, ``swordhit_12b`` -> ``swordhit_12``). Voice
    lines also drop their trailing take number (``civ_female_attack_1``/``_2`` -> ``civ_female_attack``),
    since their numbers are takes of one phrase; for effects the number names a separate recording.
    """
    group = re.sub(r"(?<=\d)[a-z]$", "", relative)
    if relative.startswith("voice/"):
        group = re.sub(r"_\d+$", "", group)
    return group


def grouped_stratified_split(labels: list[str], groups: list[str]) -> list[str]:
    """Seeded 80/20 split per class that keeps every group on one side (a group must not span classes)."""
    by_class: dict[str, dict[str, list[int]]] = {}
    for index, (label, group) in enumerate(zip(labels, groups)):
        by_class.setdefault(label, {}).setdefault(group, []).append(index)
    if len({group for class_groups in by_class.values() for group in class_groups}) != sum(map(len, by_class.values())):
        raise ValueError("a group spans several classes")
    split = ["train"] * len(labels)
    for label in sorted(by_class):
        class_groups = by_class[label]
        names = sorted(class_groups)
        target = round(TEST_FRACTION * sum(len(v) for v in class_groups.values()))
        taken = 0
        for position in named_rng("events-split", label).permutation(len(names)):
            members = class_groups[names[position]]
            if taken + len(members) <= target:
                for index in members:
                    split[index] = "test"
                taken += len(members)
    return split


def build_events(workspace: Workspace, out_dir: Path) -> list[dict]:
    audio_root = workspace.package_root("0ad-data")
    version = workspace.versions()["0ad-data"]
    selected = []
    for path in sorted((audio_root / "audio").rglob("*.ogg")):
        relative = path.relative_to(audio_root / "audio").with_suffix("").as_posix()
        label = event_class(relative)
        if label is not None:
            selected.append((path, relative, label))
    groups = [take_group(relative) for _, relative, _ in selected]
    splits = grouped_stratified_split([label for _, _, label in selected], groups)
    rows = []
    for (path, relative, label), group, split in zip(selected, groups, splits):
        clip_id = relative.replace("/", "-")
        file_path = f"audio/{label}/{clip_id}.flac"
        pcm = to_int16(decode_16k(path))
        write_flac(out_dir / file_path, pcm)
        rows.append(
            {
                "id": clip_id,
                "path": file_path,
                "label": label,
                "split": split,
                "group": group,
                "num_samples": len(pcm),
                "duration_s": round(len(pcm) / SAMPLE_RATE, 4),
                "source_package": "0ad-data",
                "package_version": version,
                "upstream_path": workspace.upstream_path("0ad-data", path),
                "licence": "CC-BY-SA-3.0",
                "pcm_sha256": pcm_sha256(pcm),
            }
        )
    write_csv(out_dir / "manifest.csv", rows)
    return rows


# ---------------------------------------------------------------------------------------------------
# GM instrument families (FluidR3_GM.sf2 rendered with tinysoundfont)

SOUNDFONT = "usr/share/sounds/sf2/FluidR3_GM.sf2"
RENDER_RATE = 48000
CLIP_SECONDS = 3.0
NOTE_SECONDS = (0.5, 2.0)
VELOCITY = (60, 120)
RENDER_PEAK = 0.5
SILENT_PEAK, MAX_DRAWS = 1e-3, 20  # a preset without a sample at the drawn key renders silence: draw again
FLUSH_SAMPLES = 4800  # rendered and dropped after each reset, so released voices never leak into the next clip
DRUM_BANK, DRUM_CHANNEL, MELODIC_CHANNEL = 128, 9, 0

# class -> (first GM program of its family or None for drums, inclusive MIDI key range)
INSTRUMENT_CLASSES = {
    "piano": (0, (36, 96)),
    "chromatic_percussion": (8, (55, 96)),
    "organ": (16, (36, 91)),
    "guitar": (24, (40, 84)),
    "bass": (32, (28, 60)),
    "strings": (40, (36, 84)),
    "brass": (56, (40, 79)),
    "reed": (64, (45, 84)),
    "pipe": (72, (60, 96)),
    "ethnic": (104, (48, 84)),
    "percussive": (112, (45, 81)),
    "drums": (None, (35, 81)),
}


def is_test_key(key: int) -> bool:
    """Held-out pitches: keys divisible by 5 form the test split."""
    return key % 5 == 0


class FontRenderer:
    """Renders single notes from one soundfont; each render is independent of the ones before it."""

    def __init__(self, soundfont: Path):
        import tinysoundfont  # only the instrument build needs it

        self.synth = tinysoundfont.Synth(samplerate=RENDER_RATE)
        self.sfid = self.synth.sfload(str(soundfont))

    def drum_kits(self) -> list[int]:
        return [p for p in range(128) if self.synth.sfpreset_name(self.sfid, DRUM_BANK, p) is not None]

    def preset_name(self, bank: int, preset: int) -> str:
        return self.synth.sfpreset_name(self.sfid, bank, preset)

    def render(self, bank: int, preset: int, key: int, velocity: int, note_s: float) -> np.ndarray:
        """A note held for ``note_s`` seconds inside a CLIP_SECONDS clip, mono float64 at 16 kHz."""
        drums = bank == DRUM_BANK
        channel = DRUM_CHANNEL if drums else MELODIC_CHANNEL
        self.synth.program_select(channel, self.sfid, bank, preset, is_drums=drums)
        self.synth.noteon(channel, key, velocity)
        held = int(round(note_s * RENDER_RATE))
        first = np.frombuffer(self.synth.generate(held), dtype=np.float32)
        self.synth.noteoff(channel, key)
        rest = np.frombuffer(self.synth.generate(int(CLIP_SECONDS * RENDER_RATE) - held), dtype=np.float32)
        self.synth.soundfonts[self.sfid].reset()
        self.synth.generate(FLUSH_SAMPLES)
        stereo = np.concatenate([first, rest]).astype(np.float64).reshape(-1, 2)
        return resample_poly(stereo.mean(axis=1), 1, RENDER_RATE // SAMPLE_RATE)


def draw_note(rng: np.random.Generator, programs: list[int], key_range: tuple[int, int], test: bool) -> dict:
    """Random render parameters for one clip of a class, with a train or test (held-out) key."""
    keys = [k for k in range(key_range[0], key_range[1] + 1) if is_test_key(k) == test]
    return {
        "preset": int(rng.choice(programs)),
        "key": int(rng.choice(keys)),
        "velocity": int(rng.integers(VELOCITY[0], VELOCITY[1] + 1)),
        "note_s": round(float(rng.uniform(*NOTE_SECONDS)), 3),
    }


def render_clip(
    renderer: FontRenderer, bank: int, programs: list[int], key_range: tuple[int, int], test: bool, seed: int
) -> tuple[dict, np.ndarray]:
    """Draw render parameters from ``seed`` (redrawing silent notes) and render them to int16 PCM at RENDER_PEAK."""
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DRAWS):
        note = draw_note(rng, programs, key_range, test)
        waveform = renderer.render(bank, note["preset"], note["key"], note["velocity"], note["note_s"])
        peak = np.max(np.abs(waveform))
        if peak > SILENT_PEAK:
            return note, to_int16(waveform * (RENDER_PEAK / peak))
    raise RuntimeError(f"{MAX_DRAWS} silent renders in a row for bank {bank}, programs {programs}")


def build_instruments(workspace: Workspace, out_dir: Path, clips_per_class: int) -> list[dict]:
    font_root = workspace.package_root("fluid-soundfont-gm")
    renderer = FontRenderer(font_root / SOUNDFONT)
    versions = workspace.versions()
    test_per_class = round(TEST_FRACTION * clips_per_class)
    rows = []
    for label, (first_program, key_range) in INSTRUMENT_CLASSES.items():
        bank = DRUM_BANK if first_program is None else 0
        programs = renderer.drum_kits() if first_program is None else list(range(first_program, first_program + 8))
        for index in range(clips_per_class):
            split = "test" if index < test_per_class else "train"
            seed = zlib.crc32(f"{SEED}:instruments:{label}:{index}".encode())
            note, pcm = render_clip(renderer, bank, programs, key_range, split == "test", seed)
            clip_id = f"{label}_{index:03d}"
            file_path = f"audio/{label}/{clip_id}.flac"
            write_flac(out_dir / file_path, pcm)
            rows.append(
                {
                    "id": clip_id,
                    "path": file_path,
                    "label": label,
                    "split": split,
                    "num_samples": len(pcm),
                    "duration_s": round(len(pcm) / SAMPLE_RATE, 4),
                    "bank": bank,
                    **note,
                    "preset_name": renderer.preset_name(bank, note["preset"]),
                    "seed": seed,
                    "source_package": "fluid-soundfont-gm",
                    "package_version": versions["fluid-soundfont-gm"],
                    "upstream_path": SOUNDFONT,
                    "licence": "MIT",
                    "pcm_sha256": pcm_sha256(pcm),
                }
            )
    write_csv(out_dir / "manifest.csv", rows)
    write_render_settings(out_dir / "render.json", versions)
    return rows


def write_render_settings(path: Path, versions: dict[str, str]) -> None:
    """The global render settings that, with a manifest row, regenerate a clip."""
    settings = {
        "soundfont": f"fluid-soundfont-gm {versions['fluid-soundfont-gm']}: {SOUNDFONT}",
        "renderer": f"tinysoundfont {versions['tinysoundfont']}",
        "render_rate": RENDER_RATE,
        "sample_rate": SAMPLE_RATE,
        "resampling": "scipy.signal.resample_poly(mean of stereo channels, 1, 3)",
        "clip_seconds": CLIP_SECONDS,
        "note": "noteon(key, velocity) at 0 s, noteoff at note_s, rendered to clip_seconds",
        "channels": {"melodic": MELODIC_CHANNEL, "drums": DRUM_CHANNEL},
        "after_each_clip": f"SoundFont.reset() then {FLUSH_SAMPLES} samples rendered and dropped",
        "peak": RENDER_PEAK,
        "split": "test if key % 5 == 0 else train",
        "seed": "per row; numpy default_rng(seed) draws preset, key, velocity, note_s (redrawn if silent)",
    }
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# Polyphonic mixtures (recipes only)

MIXTURE_SECONDS = 3.0
MIXTURE_PEAK = 0.7
MIXTURE_GAIN_DB = 6.0
MIXTURE_MAX_DELAY_S = 1.0
MIXTURES_PER_SPLIT = {"train": 600, "test": 200}


def mixture_recipe(set_name: str, split: str, index: int, clips_by_label: dict[str, list[dict]]) -> dict:
    """One recipe: 2 or 3 clips with distinct labels, random gains (+-6 dB) and onsets.

    A clip starts at a random sample in ``[0, max(mixture length - clip length, 1 s)]``, so every clip's
    beginning is inside the mixture.
    """
    seed = zlib.crc32(f"{SEED}:mixtures:{set_name}:{split}:{index}".encode())
    rng = np.random.default_rng(seed)
    length = int(MIXTURE_SECONDS * SAMPLE_RATE)
    count = int(rng.choice([2, 3]))
    labels = sorted(str(label) for label in rng.choice(sorted(clips_by_label), size=count, replace=False))
    components = []
    for label in labels:
        clip = clips_by_label[label][int(rng.integers(len(clips_by_label[label])))]
        latest = max(length - int(clip["num_samples"]), int(MIXTURE_MAX_DELAY_S * SAMPLE_RATE))
        components.append(
            {
                "clip": clip["id"],
                "label": label,
                "gain_db": round(float(rng.uniform(-MIXTURE_GAIN_DB, MIXTURE_GAIN_DB)), 2),
                "onset": int(rng.integers(0, latest + 1)),
            }
        )
    return {
        "id": f"{set_name}_{split}_{index:04d}",
        "seed": seed,
        "labels": labels,
        "components": components,
        "num_samples": length,
        "sample_rate": SAMPLE_RATE,
        "peak": MIXTURE_PEAK,
    }


def build_mixtures(demo_dir: Path, set_name: str) -> dict[str, int]:
    """Write ``mixtures/<set>_<split>.jsonl`` from the clips of each split of a built labelled set."""
    rows = read_csv(demo_dir / set_name / "manifest.csv")
    counts = {}
    for split, count in MIXTURES_PER_SPLIT.items():
        clips_by_label: dict[str, list[dict]] = {}
        for row in rows:
            if row["split"] == split:
                clips_by_label.setdefault(row["label"], []).append(row)
        path = demo_dir / "mixtures" / f"{set_name}_{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for index in range(count):
                handle.write(json.dumps(mixture_recipe(set_name, split, index, clips_by_label)) + "\n")
        counts[split] = count
    return counts


# ---------------------------------------------------------------------------------------------------
# Strongly labelled soundscapes (background chunks + recipes)

SOUNDSCAPE_SECONDS = 10.0
SOUNDSCAPE_EVENTS = (1, 4)  # events per soundscape, inclusive; distinct classes
SOUNDSCAPE_EBR_DB = (0.0, 10.0)  # event-to-background RMS ratio, uniform
SOUNDSCAPE_PEAK = 0.7
SOUNDSCAPES_PER_SPLIT = {"train": 300, "test": 100}
BACKGROUND_FOLDER = "audio/ambient"
BACKGROUND_CHUNKS_PER_FILE = 4
BACKGROUND_TEST_FRACTION = 1 / 3


def background_chunks(workspace: Workspace, pretrain_rows: list[dict]) -> list[tuple[Path, str, np.ndarray, list]]:
    """``(file, split, waveform, chunks)`` of the 0 A.D. ambience files that the pre-training corpus does not use and
    that have a full 10 s chunk of at least -50 dBFS (at most BACKGROUND_CHUNKS_PER_FILE, spread over the file).
    Split by recording: per sub-folder (building, dayscape, water, weather) a seeded third of the files is test."""
    root = workspace.package_root("0ad-data")
    used = {row["upstream_path"] for row in pretrain_rows}
    size = int(SOUNDSCAPE_SECONDS * SAMPLE_RATE)
    by_folder: dict[str, list[tuple[Path, np.ndarray, list]]] = {}
    for path in sorted((root / BACKGROUND_FOLDER).rglob("*.ogg")):
        if workspace.upstream_path("0ad-data", path) in used:
            continue
        waveform = decode_16k(path)
        chunks = spread([(a, b) for a, b in usable_chunks(waveform) if b - a == size], BACKGROUND_CHUNKS_PER_FILE)
        if chunks:
            by_folder.setdefault(path.parent.name, []).append((path, waveform, chunks))
    chosen = []
    for folder in sorted(by_folder):
        files = by_folder[folder]
        test_count = round(BACKGROUND_TEST_FRACTION * len(files))
        for rank, position in enumerate(named_rng("backgrounds", folder).permutation(len(files))):
            path, waveform, chunks = files[position]
            chosen.append((path, "test" if rank < test_count else "train", waveform, chunks))
    return sorted(chosen, key=lambda item: item[0])


def build_backgrounds(workspace: Workspace, out_dir: Path, pretrain_rows: list[dict]) -> list[dict]:
    """The background chunks of `background_chunks` as Ogg Vorbis, and their manifest."""
    version = workspace.versions()["0ad-data"]
    rows = []
    for path, split, waveform, chunks in background_chunks(workspace, pretrain_rows):
        for start, end in chunks:
            chunk_id = f"{path.stem}_{start // SAMPLE_RATE:03d}s"
            relative = f"backgrounds/{chunk_id}.ogg"
            write_ogg(out_dir / relative, to_int16(waveform[start:end]))
            decoded = read_pcm(out_dir / relative)
            rows.append(
                {
                    "id": chunk_id,
                    "path": relative,
                    "split": split,
                    "num_samples": len(decoded),
                    "start_s": round(start / SAMPLE_RATE, 4),
                    "source_package": "0ad-data",
                    "package_version": version,
                    "upstream_path": workspace.upstream_path("0ad-data", path),
                    "licence": "CC-BY-SA-3.0",
                    "pcm_sha256": pcm_sha256(decoded),
                }
            )
    write_csv(out_dir / "manifest.csv", rows)
    return rows


def soundscape_recipe(split: str, index: int, backgrounds: list[dict], clips_by_label: dict[str, list[dict]]) -> dict:
    """One recipe: a background chunk of the split and 1-4 event clips of distinct classes of the split, each at a
    random onset that keeps the whole clip inside the soundscape, with a random event-to-background ratio."""
    seed = zlib.crc32(f"{SEED}:soundscapes:{split}:{index}".encode())
    rng = np.random.default_rng(seed)
    length = int(SOUNDSCAPE_SECONDS * SAMPLE_RATE)
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    count = int(rng.integers(SOUNDSCAPE_EVENTS[0], SOUNDSCAPE_EVENTS[1] + 1))
    events = []
    for label in rng.choice(sorted(clips_by_label), size=count, replace=False):
        clip = clips_by_label[str(label)][int(rng.integers(len(clips_by_label[str(label)])))]
        events.append(
            {
                "clip": clip["id"],
                "label": str(label),
                "onset": int(rng.integers(0, length - int(clip["num_samples"]) + 1)),
                "gain_db": round(float(rng.uniform(*SOUNDSCAPE_EBR_DB)), 2),
            }
        )
    return {
        "id": f"soundscape_{split}_{index:04d}",
        "seed": seed,
        "background": {"clip": background["id"], "gain_db": 0.0},
        "events": sorted(events, key=lambda event: (event["onset"], event["label"])),
        "num_samples": length,
        "sample_rate": SAMPLE_RATE,
        "peak": SOUNDSCAPE_PEAK,
    }


EXAMPLE_MIN_EVENTS = 3


def write_example_soundscape(demo_dir: Path) -> str:
    """Render the first test soundscape with at least EXAMPLE_MIN_EVENTS events to ``soundscapes/example.flac``,
    with its ground truth ``example.tsv``."""
    from sslam.demo_data.loader import materialize_soundscape, read_soundscape_recipes, soundscape_events
    from sslam.evaluation.strong_labels import write_dcase_tsv

    recipe = next(r for r in read_soundscape_recipes("test") if len(r["events"]) >= EXAMPLE_MIN_EVENTS)
    write_flac(demo_dir / "soundscapes" / "example.flac", to_int16(materialize_soundscape(recipe)))
    write_dcase_tsv(demo_dir / "soundscapes" / "example.tsv", {"example.flac": soundscape_events(recipe)})
    return recipe["id"]


def build_soundscapes(workspace: Workspace, demo_dir: Path) -> str:
    """Backgrounds, ``soundscapes/<split>.jsonl`` recipes (events from the built ``events`` set) and the example."""
    out_dir = demo_dir / "soundscapes"
    clear_audio(out_dir, "backgrounds")
    backgrounds = build_backgrounds(workspace, out_dir, read_csv(demo_dir / "pretrain" / "manifest.csv"))
    events = read_csv(demo_dir / "events" / "manifest.csv")
    for split, count in SOUNDSCAPES_PER_SPLIT.items():
        clips_by_label: dict[str, list[dict]] = {}
        for row in events:
            if row["split"] == split:
                clips_by_label.setdefault(row["label"], []).append(row)
        split_backgrounds = [row for row in backgrounds if row["split"] == split]
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for index in range(count):
                recipe = soundscape_recipe(split, index, split_backgrounds, clips_by_label)
                handle.write(json.dumps(recipe) + "\n")
    example = write_example_soundscape(demo_dir)
    counts = {split: sum(row["split"] == split for row in backgrounds) for split in SOUNDSCAPES_PER_SPLIT}
    return f"{len(backgrounds)} backgrounds {counts}, recipes {SOUNDSCAPES_PER_SPLIT}, example {example}"


# ---------------------------------------------------------------------------------------------------
# Command line


SETS = ("pretrain", "events", "instruments", "mixtures", "soundscapes")  # the last two read the built manifests


def clear_audio(set_dir: Path, folder: str = "audio") -> None:
    """Remove a set's previous audio so a rebuild leaves no stale files."""
    for path in sorted(set_dir.glob(f"{folder}/**/*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def minutes(rows: list[dict]) -> float:
    return sum(int(row["num_samples"]) for row in rows) / SAMPLE_RATE / 60


def build_set(name: str, workspace: Workspace, out_dir: Path, clips_per_class: int) -> str:
    """Build one set and describe the result in a line."""
    if name == "mixtures":
        return str({set_name: build_mixtures(out_dir, set_name) for set_name in ("events", "instruments")})
    if name == "soundscapes":
        return build_soundscapes(workspace, out_dir)
    clear_audio(out_dir / name)
    if name == "pretrain":
        rows = build_pretrain(workspace, out_dir / name)
    elif name == "events":
        rows = build_events(workspace, out_dir / name)
    else:
        rows = build_instruments(workspace, out_dir / name, clips_per_class)
    return f"{len(rows)} clips, {minutes(rows):.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder prepared by build.sh")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder of the sets")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated subset of %(default)s")
    parser.add_argument("--clips-per-class", type=int, default=40, help="instrument clips per class")
    args = parser.parse_args()
    names = args.sets.split(",")
    if unknown := set(names) - set(SETS):
        parser.error(f"unknown sets {sorted(unknown)}")
    workspace = Workspace(args.work)
    for name in names:
        started = time.perf_counter()
        summary = build_set(name, workspace, args.out, args.clips_per_class)
        print(f"{name}: {summary} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
