"""Tar shards: writing (`sslam shard`), the deterministic stream (layout, exact resume position), faults inside shards,
and pre-training from shards that resumes mid-epoch to the same loss sequence."""

import io
import json
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch

from sslam.cli.shard import main as shard_main
from sslam.training.errors import NotEnoughDataError
from sslam.training.pretrain import main
from sslam.training.shards import ShardedAudioStream, read_index, shard_dataloader, write_shards

SHARD_FLAGS = [
    "--preset", "stage1", "--model_size", "tiny", "--max_length", "128", "--clone_batch", "2",
    "--per_device_train_batch_size", "2", "--logging_steps", "1", "--warmup_steps", "1", "--seed", "3",
    "--learning_rate", "1e-3", "--save_steps", "1000",
]  # fmt: skip


def tone(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * 16000)) / 16000
    waveform = 0.2 * np.sin(2 * np.pi * (150 + 40 * seed) * time) + 0.05 * rng.standard_normal(time.shape)
    return waveform.astype(np.float32)


def encoded(waveform: np.ndarray, audio_format: str = "FLAC", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, 16000, format=audio_format, subtype=subtype)
    return buffer.getvalue()


def write_raw_shards(folder: Path, shards: list[list[tuple[str, bytes]]]) -> Path:
    """Shards written as another tool would (stdlib tarfile): each clip `(extension, audio bytes)`, and an index."""
    folder.mkdir(parents=True)
    entries, key = [], 0
    for number, clips in enumerate(shards):
        name = f"raw-{number:06d}.tar"
        with tarfile.open(folder / name, "w") as archive:
            for extension, data in clips:
                for member, payload in ((f"{key:06d}.{extension}", data), (f"{key:06d}.json", b'{"source": "x"}')):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
                key += 1
        entries.append({"url": name, "num_samples": len(clips)})
    index = {"format": "sslam-audio-shards", "version": 1, "audio_format": "flac", "shards": entries, "skipped": []}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Ten clips of 0.5-1.4 s (one at 22.05 kHz, one stereo), one corrupt file and one NaN-valued float WAV."""
    folder = tmp_path_factory.mktemp("corpus")
    for index in range(10):
        waveform = tone(index, 0.5 + 0.1 * index)
        if index == 4:
            waveform = np.stack([waveform, 0.5 * waveform], axis=1)
        soundfile.write(folder / f"clip{index}.wav", waveform, 22050 if index == 3 else 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    nan_clip = tone(11)
    nan_clip[100] = np.nan
    soundfile.write(folder / "nan.wav", nan_clip, 16000, subtype="FLOAT")
    return folder


@pytest.fixture(scope="module")
def stream_shards(tmp_path_factory) -> Path:
    """16 good clips in 4 shards of 4 (for layout and resume tests of the stream alone)."""
    folder = tmp_path_factory.mktemp("stream") / "shards"
    write_shards([{"array": tone(i, 0.3), "sampling_rate": 16000} for i in range(16)], folder, clips_per_shard=4)
    return folder


def test_sslam_shard_writes_checked_shards_and_leaves_bad_clips_out(corpus, tmp_path, capsys):
    output = tmp_path / "shards"
    shard_main([str(corpus), "--output_dir", str(output), "--clips_per_shard", "4", "--seed", "1"])
    assert "wrote 10 clips in 3 shards" in capsys.readouterr().out
    index = json.loads((output / "index.json").read_text())
    assert [shard["num_samples"] for shard in index["shards"]] == [4, 4, 2] and index["num_clips"] == 10
    skipped = {Path(entry["source"]).name: entry["reason"] for entry in index["skipped"]}
    assert set(skipped) == {"corrupt.wav", "nan.wav"} and "NaN" in skipped["nan.wav"]
    assert sorted(path.name for path in output.iterdir()) == ["index.json", *(f"train-00000{i}.tar" for i in range(3))]

    with tarfile.open(output / "train-000000.tar") as archive:
        names = archive.getnames()
        assert names[:2] == ["000000000.flac", "000000000.json"] and len(names) == 8
        metadata = json.loads(archive.extractfile(names[1]).read())
        audio, rate = soundfile.read(io.BytesIO(archive.extractfile(names[0]).read()))
    assert rate == 16000 and audio.ndim == 1 and metadata["sampling_rate"] == 16000
    original = Path(metadata["source"])
    assert original.parent == corpus and abs(metadata["duration"] - audio.shape[0] / 16000) < 1e-3

    # the clip order is shuffled by --seed, and the same seed writes the same bytes
    again = tmp_path / "again"
    shard_main([str(corpus), "--output_dir", str(again), "--clips_per_shard", "4", "--seed", "1"])
    assert (again / "train-000001.tar").read_bytes() == (output / "train-000001.tar").read_bytes()
    order = [json.loads(t.extractfile(m).read())["source"] for t in [tarfile.open(output / "train-000000.tar")]
             for m in t.getmembers() if m.name.endswith(".json")]  # fmt: skip
    assert order != sorted(order)

    # datasets' webdataset loader reads the shards too
    streamed = datasets.load_dataset(
        "webdataset", data_files=[str(path) for path in sorted(output.glob("*.tar"))], split="train", streaming=True
    )
    assert sum(1 for _ in streamed) == 10

    for argv, code, message in (
        ([str(corpus), "--output_dir", str(output)], 2, "not an empty folder"),  # no overwrite
        ([str(tmp_path / "missing"), "--output_dir", str(tmp_path / "new")], 2, "not found"),
        ([str(corpus), "--output_dir", str(tmp_path / "x"), "--clips_per_shard", "0"], 2, "positive integer"),
        ([str(corpus), "--output_dir", str(tmp_path / "x"), "--num_workers", "-1"], 2, "--num_workers must be >= 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            shard_main(argv)
        stderr = capsys.readouterr().err
        assert exit_info.value.code == code and message in stderr
        assert stderr.startswith("error: ") and stderr.count("\n") == 1


def test_sslam_shard_command_is_registered(capsys):
    from sslam.cli.main import main as sslam_main

    with pytest.raises(SystemExit) as exit_info:
        sslam_main(["shard", "--help"])
    assert exit_info.value.code == 0 and "--clips_per_shard" in capsys.readouterr().out


def test_streams_are_disjoint_equal_and_cover_the_corpus(stream_shards, tmp_path):
    streams = [
        ShardedAudioStream(str(stream_shards), batch_size=2, num_workers=1, rank=rank, world_size=2, seed=5)
        for rank in (0, 1)
    ]
    assert [len(stream) for stream in streams] == [8, 8]
    for epoch in (0, 1):
        seen = []
        for stream in streams:
            stream.set_epoch(epoch)
            items = list(stream)
            assert len(items) == 8 and {item["epoch"] for item in items} == {epoch}
            seen.append([item["index"] for item in items])
        assert sorted(seen[0] + seen[1]) == list(range(16))  # 4 shards over 2 streams: nothing left out
        if epoch == 0:
            first = seen
    assert first != seen  # another shard order and shuffle in epoch 1
    with pytest.raises(NotEnoughDataError, match="4 shards, fewer than the 6 streams"):
        ShardedAudioStream(str(stream_shards), batch_size=2, num_workers=3, world_size=2)
    with pytest.raises(NotEnoughDataError, match="fewer clips than one optimizer step"):
        ShardedAudioStream(str(stream_shards), batch_size=4, num_workers=2, world_size=2, gradient_accumulation_steps=2)
    with pytest.raises(NotEnoughDataError, match="fewer clips than one optimizer step"):
        ShardedAudioStream(str(stream_shards), batch_size=32)
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an sslam shard index"):
        ShardedAudioStream(str(tmp_path / "other.json"), batch_size=2)
    with pytest.raises(FileNotFoundError, match="No shard index"):
        ShardedAudioStream(str(tmp_path), batch_size=2)


@pytest.mark.parametrize("batches_done", [0, 3, 4, 7])
def test_resumed_stream_continues_the_batch_sequence(stream_shards, batches_done):
    """Two workers: after k consumed batches (odd or even), a new loader yields exactly the remaining batches."""

    def batches(position=None):
        stream = ShardedAudioStream(str(stream_shards), batch_size=2, num_workers=2, seed=2, buffer_size=3)
        stream.set_epoch(1)
        if position is not None:
            stream.set_position(1, position)
        loader = shard_dataloader(stream, lambda items: [item["index"] for item in items], seed=0)
        return list(loader)

    full = batches()
    assert len(full) == 8 and sorted(sum(full, [])) == list(range(16))
    assert batches(batches_done) == full[batches_done:]


def test_truncated_and_missing_shards_become_counted_bad_clips(stream_shards, tmp_path, caplog):
    folder = tmp_path / "damaged"
    folder.mkdir()
    for path in stream_shards.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    data = (folder / "train-000001.tar").read_bytes()
    (folder / "train-000001.tar").write_bytes(data[: len(data) // 2])
    (folder / "train-000002.tar").unlink()
    stream = ShardedAudioStream(str(folder), batch_size=4, seed=0)
    items = list(stream)
    assert len(items) == 16 and sorted(item["index"] for item in items) == list(range(16))
    bad = [item for item in items if "error" in item]
    assert 4 < len(bad) < 8 and all(item["audio"] is None for item in bad)
    assert {item["index"] for item in bad} >= set(range(8, 12))
    assert "train-000002.tar could not be read after 0 clips" in caplog.text
    assert "train-000001.tar" in caplog.text
    assert read_index(str(folder))["shards"][0]["url"] == str(folder / "train-000000.tar")


def run_losses(run) -> list[float]:
    return [entry["loss"] for entry in run.trainer.state.log_history if "loss" in entry]


def test_pretraining_from_shards_skips_bad_clips_and_resumes_mid_epoch_exactly(tmp_path, capfd):
    """4 shards x 4 clips with a corrupt FLAC and a NaN float WAV inside; 2 workers, 8 batches per epoch. A run of
    10 steps vs the same run resumed from its step-5 checkpoint (mid-epoch, odd batch count, then across the epoch
    boundary): identical loss sequence and skip counts; the bad clips are skipped, named and counted."""
    nan_clip = tone(99, 0.5)
    nan_clip[7] = np.nan
    good = [("flac", encoded(tone(i, 0.5 + 0.05 * i))) for i in range(14)]
    corrupt, nan_wav = ("flac", b"fLaC\x00\x00\x00\x22 truncated"), ("wav", encoded(nan_clip, "WAV", "FLOAT"))
    clips = [*good[:5], corrupt, *good[5:10], nan_wav]  # indices 5 and 11
    shards = write_raw_shards(tmp_path / "shards", [(clips + good[10:])[i : i + 4] for i in range(0, 16, 4)])
    flags = [*SHARD_FLAGS, "--data", str(shards), "--dataloader_num_workers", "2", "--max_steps", "10",
             "--max_skipped_fraction", "0.2"]  # fmt: skip

    full = main([*flags, "--output_dir", str(tmp_path / "full"), "--save_steps", "5"])
    drawn = []  # the clip indices of the 10 steps, in order: epoch 0 (8 batches), then 2 batches of epoch 1
    for epoch, batches in ((0, 8), (1, 2)):
        stream = ShardedAudioStream(str(shards), batch_size=2, num_workers=2, seed=3)
        stream.set_epoch(epoch)
        drawn += sum(list(shard_dataloader(stream, lambda items: [i["index"] for i in items], seed=0))[:batches], [])
    expected_skips = sum(index in (5, 11) for index in drawn)
    final = full.trainer.state.log_history[-1]
    assert final["skipped_clips_total"] == expected_skips >= 2 and final["skipped_fraction"] == expected_skips / 20
    assert sum(entry["skipped_clips"] for entry in full.trainer.state.log_history if "loss" in entry) == expected_skips
    assert full.trainer.state.global_step == 10 and (tmp_path / "full" / "encoder" / "model.safetensors").is_file()

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoint-5").symlink_to(tmp_path / "full" / "checkpoint-5")
    resumed = main([*flags, "--output_dir", str(resumed_dir), "--resume_from_checkpoint", "last"])
    assert len(run_losses(full)) == 10 and run_losses(resumed) == run_losses(full)
    epochs = [[entry["epoch"] for entry in run.trainer.state.log_history] for run in (full, resumed)]
    assert epochs[0] == epochs[1]
    assert resumed.trainer.state.log_history[-1]["skipped_clips_total"] == expected_skips
    full_weights, resumed_weights = full.trainer.model.state_dict(), resumed.trainer.model.state_dict()
    for name, value in full_weights.items():
        assert torch.equal(resumed_weights[name], value), name

    with pytest.raises(SystemExit) as exit_info:  # another worker layout changes the order: refused
        main([*flags, "--output_dir", str(resumed_dir), "--resume_from_checkpoint", str(resumed_dir / "checkpoint-5"),
              "--dataloader_num_workers", "1"])  # fmt: skip
    assert exit_info.value.code == 1 and "another layout" in capfd.readouterr().err


def test_shard_skip_limit_stops_the_run_without_saving_a_model(tmp_path, capfd, caplog):
    clips = [("flac", encoded(tone(i, 0.4))) for i in range(7)] + [("flac", b"not flac")]
    shards = write_raw_shards(tmp_path / "shards", [clips[:4], clips[4:]])
    with pytest.raises(SystemExit) as exit_info:
        main([*SHARD_FLAGS, "--data", str(shards), "--dataloader_num_workers", "0", "--max_steps", "4",
              "--output_dir", str(tmp_path / "run")])  # fmt: skip
    stderr = capfd.readouterr().err
    error = stderr[stderr.index("error:") :]
    assert exit_info.value.code == 1 and error.count("\n") == 1
    assert error.startswith("error: 1 of 8 clips (12.5%) could not be used by step 4, more than")
    assert "raw-000001.tar/000007.flac (x)" in error
    assert "skipping clip raw-000001.tar/000007.flac (x): " in caplog.text  # the warning names it too
    assert not (tmp_path / "run" / "encoder").exists() and not (tmp_path / "run" / "pretraining").exists()


def test_stream_reads_shards_from_a_url(stream_shards):
    """The same items from an http:// index (a loopback server) as from the local folder."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(stream_shards))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.json"
        remote = list(ShardedAudioStream(url, batch_size=4, seed=1))
        server.shutdown()
    local = list(ShardedAudioStream(str(stream_shards), batch_size=4, seed=1))
    assert [item["index"] for item in remote] == [item["index"] for item in local]
    assert all(a["audio"]["bytes"] == b["audio"]["bytes"] for a, b in zip(remote, local)) and len(remote) == 16


def test_sslam_shard_writes_a_datasets_audiofolder(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "audiofolder"
    folder.mkdir()
    for index in range(3):
        (folder / f"clip{index}.wav").write_bytes((corpus / f"clip{index}.wav").read_bytes())
    output = tmp_path / "shards"
    shard_main([str(folder), "--data_format", "audiofolder", "--output_dir", str(output), "--no_shuffle"])
    assert "wrote 3 clips in 1 shards" in capsys.readouterr().out
    with tarfile.open(output / "train-000000.tar") as archive:
        sources = [json.loads(archive.extractfile(m).read())["source"] for m in archive if m.name.endswith(".json")]
    assert [Path(source).name for source in sources] == ["clip0.wav", "clip1.wav", "clip2.wav"]
