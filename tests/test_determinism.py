"""The same bytes through the same space give the same vectors, bit for bit, whatever the worker and thread counts:
the offline space with its real models (whisper included) on a small corpus of photos, drawings, speech and a
sound effect."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

from conftest import embed, embeddings, ingest, read_table
from mmindex.demo import CORPUS
from mmindex.encoders.inputs import load_mono
from mmindex.encoders.speech import NO_SPEECH, WHISPER_RATE
from mmindex.spaces import resolve_space

# Files of the demo corpus, with their captions: photos and drawings (batches of 3 images, where the classifier's
# results changed with its thread count), and speech.
FILES = ["photos/chelsea_cat.jpg", "photos/coffee.jpg", "photos/rocket.jpg", "clipart/bus.png", "clipart/cactus.png",
         "speech/demo_thanks.wav", "speech/vm_tooshort.flac"]


def slowed_cat() -> bytes:
    """The CC0 cat's meow played at 4/5 speed: whisper's voice detector lets it through, and greedy decoding reads
    "Ha ha!" into it with little confidence (whisper's default then sampled other words at random)."""
    samples = load_mono((CORPUS / "sounds" / "cat.mp3").read_bytes(), WHISPER_RATE)
    buffer = io.BytesIO()
    soundfile.write(buffer, resample_poly(samples, 5, 4).astype(np.float32), WHISPER_RATE, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def audio_encoder():
    return resolve_space("offline").load("cpu", only={"audio"})["audio"]


def test_a_sound_effect_is_no_speech_and_the_same_every_time(audio_encoder):
    prepared = audio_encoder.preparer()(slowed_cat())
    first, second = audio_encoder.encode([prepared]), audio_encoder.encode([prepared])
    assert first.skipped == second.skipped == [NO_SPEECH] and first.notes == second.notes == [None]
    assert not first.vectors.any() and not second.vectors.any()


def test_real_speech_still_passes(audio_encoder):
    clip = (CORPUS / "speech" / "vm_tooshort.flac").read_bytes()
    result = audio_encoder.encode([audio_encoder.preparer()(clip)])
    assert result.skipped == [None] and "too short" in result.notes[0].lower(), result.notes


@pytest.mark.parametrize("at_once", [32, 1])
def test_clips_transcribed_together_keep_their_own_words(audio_encoder, at_once, monkeypatch):
    """Whisper decodes the windows of a batch's clips together (at most WINDOWS_AT_ONCE per call): each clip still
    gets its own transcript, the same as alone, and a sound between two speech clips stays no speech."""
    from mmindex.encoders import speech

    monkeypatch.setattr(speech, "WINDOWS_AT_ONCE", at_once)
    prepare = audio_encoder.preparer()
    clips = [prepare((CORPUS / "speech" / name).read_bytes()) for name in ("vm_tooshort.flac", "demo_thanks.wav")]
    clips.insert(1, prepare(slowed_cat()))
    together = audio_encoder.encode(clips)
    alone = [audio_encoder.encode([clip]) for clip in clips]
    assert together.notes == [one.notes[0] for one in alone] and together.skipped == [None, NO_SPEECH, None]
    # the text encoder pads a batch's transcripts to the longest: their vectors agree in all but the last bits
    np.testing.assert_allclose(together.vectors, np.concatenate([one.vectors for one in alone]), atol=1e-6)
    assert not together.vectors[1].any()


def test_a_clip_longer_than_whisper_window_is_transcribed_whole(audio_encoder):
    """Seven prompts back to back make 40 s of speech: whisper sees it in more than one window of at most 30 s,
    and the words of the first and the last prompt reach the one transcript, beside a short clip's own."""
    prepare = audio_encoder.preparer()
    names = ("agent_alreadyon.wav", "demo_thanks.wav", "dir_instr.flac", "vm_forwardoptions.wav",
             "vm_tempgreeting2.wav", "status.wav", "vm_saveoper.wav")
    long = np.concatenate([prepare((CORPUS / "speech" / name).read_bytes()) for name in names])
    short = prepare((CORPUS / "speech" / "conf_locked.wav").read_bytes())
    assert len(audio_encoder.windows(long)) >= 2
    result = audio_encoder.encode([long, short])
    assert "agent" in result.notes[0].lower() and "continue to hold" in result.notes[0].lower(), result.notes
    assert result.notes[1] == audio_encoder.encode([short]).notes[0]


def test_workers_and_threads_change_no_byte_of_the_vectors(tmp_path):
    """Images, speech, a sound effect and captions embedded by one worker on two threads with a decode process,
    and by two workers on one thread each that decode for themselves: the same bytes."""
    corpus = tmp_path / "corpus"
    for name in FILES:
        for path in (CORPUS / name).parent.glob(f"{Path(name).stem}.*"):
            (corpus / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, corpus / path.parent.name / path.name)
    (corpus / "sounds").mkdir()
    (corpus / "sounds" / "cat_slowed.wav").write_bytes(slowed_cat())
    one = tmp_path / "one"
    ingest(corpus, dataset=one, extra=("--shard-size=4",))
    two = Path(shutil.copytree(one, tmp_path / "two"))
    embed(one, workers=1, threads=2, batch_size=3, decode_workers=1)  # batches prepared in a decode process
    embed(two, workers=2, threads=1, batch_size=3, decode_workers=0)  # and in each worker itself

    first = embeddings(one, "offline")
    assert len([name for name in first if name.endswith(".npy")]) >= 5  # image, audio and text of 2 shards
    assert embeddings(two, "offline") == first
    rows = {(r["key"], r["modality"]): r for r in read_table(one / "embeddings" / "offline")}
    assert [r["skipped"] for r in rows.values() if r["modality"] == "audio"].count(NO_SPEECH) == 1
    assert sum(r["row"] is not None for r in rows.values() if r["modality"] == "audio") == 2  # the speech clips
    recorded = json.loads((one / "embeddings" / "offline" / "space.json").read_text())["settings"]
    assert recorded["image"]["threads"] == 2 and recorded["audio"]["min_logprob"] == -1.0
