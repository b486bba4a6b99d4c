"""A stage declared once runs the same on every executor: in-process on threads, on worker processes, and on Beam;
facts that no step takes ride along to the end; a dead worker or a failing step is reported as such."""

from __future__ import annotations

import gc
import os
import threading
from collections import Counter
from dataclasses import dataclass

import pytest

from mmindex.dataset.embeddings import ShardSummary
from mmindex.executors.local import LocalExecutor
from mmindex.stages import ByKey, Each, Stage, Whole, Worker, WorkerDied
from pipelines.executor import BeamExecutor, decode, encode


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class Word:
    word: str


@dataclass(frozen=True)
class Total:
    word: str
    n: int


@dataclass(frozen=True)
class Note:
    """A fact no step takes."""

    what: str


class Split:
    """An Each step with set-up, as a model would have: it learns its worker."""

    def setup(self, worker: Worker) -> None:
        self.worker = worker

    def __call__(self, line: Line) -> list[Word | Note]:
        if line.text == "die":
            os._exit(3)
        if line.text == "fail":
            raise ValueError("a step's own error")
        return [*map(Word, line.text.split()), Note(f"split on a {'local' if self.worker.local else 'cluster'} worker")]


def count(word: str, words: list[Word]) -> list[Total]:
    return [Total(word, len(words))]


def rank(totals: list[Total]) -> list[Note]:
    """Needs every total at once; their order is not given."""
    return [Note(" ".join(f"{t.word}={t.n}" for t in sorted(totals, key=lambda t: (-t.n, t.word))))]


def word_of(word: Word) -> str:
    return word.word


def stage(lines: list[str], tmp_path) -> Stage:
    return Stage("words", [*map(Line, lines), Note("given at the start")], [
        Each("Split", Split(), Line, runs="cpu"),
        ByKey("Count", count, Word, runs="io", key=word_of),
        Whole("Rank", rank, Total),
    ], (Note,), str(tmp_path / "scratch"))


LINES = ["the cat sat", "the dog sat on the cat", "a cat"]


def outcome(facts) -> Counter:
    """The facts, with where Split ran left out."""
    return Counter(Note("split") if isinstance(f, Note) and f.what.startswith("split on") else f for f in facts)


@pytest.mark.parametrize("executor", [LocalExecutor(), LocalExecutor(threads=1), LocalExecutor(workers=2)],
                         ids=["threads", "one-thread", "processes"])
def test_every_executor_gives_the_same_facts(executor, tmp_path):
    ran = list(executor.run(stage(LINES, tmp_path)))
    assert ran.count(Note("split on a local worker")) == 3
    facts = outcome(ran)
    assert facts == outcome(BeamExecutor([]).run(stage(LINES, tmp_path)))
    assert facts[Note("cat=3 the=3 sat=2 a=1 dog=1 on=1")] == 1
    assert facts[Note("given at the start")] == 1, "an element no step takes reaches the end untouched"
    assert not [f for f in facts if isinstance(f, Word | Total | Line)], "what a step takes does not go on"


def test_beam_writes_the_outcome_even_when_nothing_reaches_the_end(tmp_path):
    empty = Stage("nothing", [Line("")], [Each("Split", lambda line: [], Line)], (), str(tmp_path / "scratch"))
    assert list(BeamExecutor([]).run(empty)) == []


def test_steps_run_as_declared_on_one_process_with_workers_that_learn_their_device(tmp_path):
    seen = []

    class Remember(Split):
        def setup(self, worker: Worker) -> None:
            super().setup(worker)
            seen.append(worker)

    steps = Stage("w", [Line("x")], [Each("Remember", Remember(), Line, runs="workers")], (), str(tmp_path))
    list(LocalExecutor(devices=["cuda:7"]).run(steps))
    assert seen == [Worker(0, 1, "cuda:7", LocalExecutor().keep_bytes, local=True)]


def test_a_dead_worker_process_is_reported_and_a_failing_step_raises_its_error(tmp_path):
    with pytest.raises(WorkerDied, match=r"mmindex-words-cpu-\d exited with code 3"):
        list(LocalExecutor(workers=2).run(stage(["a b", "die", *LINES * 3], tmp_path)))
    with pytest.raises(ValueError, match="a step's own error"):
        list(LocalExecutor(workers=2).run(stage([*LINES, "fail"], tmp_path)))
    with pytest.raises(ValueError, match="a step's own error"):
        list(LocalExecutor().run(stage([*LINES, "fail"], tmp_path)))


def test_the_outcome_file_keeps_facts_whole_and_makes_only_the_stages_facts():
    facts = [ShardSummary(3, {"image": 2}, {("image", "unreadable image"): 1}, {"image": 0.5}, "cpu")]
    allowed = {"mmindex.dataset.embeddings:ShardSummary": ShardSummary}
    assert decode(encode(facts), allowed) == facts
    with pytest.raises(ValueError, match="not one of the stage's facts"):
        decode({"~class": "subprocess:Popen", "fields": {"args": ["true"]}}, allowed)


def shout(note: Note) -> list[Note]:
    return [Note(note.what.upper())]


def test_fused_steps_on_processes_take_what_any_of_them_takes(tmp_path):
    """On processes, Split and Shout run fused; a Note given at the start, which only Shout takes, is shouted too."""
    declared = Stage("shout", [*map(Line, LINES), Note("given at the start")], [
        Each("Split", Split(), Line, runs="cpu"),
        Each("Shout", shout, Note, runs="io"),
    ], (Note, Word), str(tmp_path / "scratch"))
    on_threads, on_processes = (Counter(LocalExecutor(workers=n).run(declared)) for n in (1, 2))
    assert on_processes == on_threads
    assert on_threads[Note("GIVEN AT THE START")] == 1 and on_threads[Note("SPLIT ON A LOCAL WORKER")] == 3


class WhereItRan:
    """Says which process and thread ran it."""

    def __call__(self, line: Line) -> list[Note]:
        return [Note(f"{os.getpid()} {threading.current_thread().name}")]


def test_python_steps_run_in_the_drivers_thread_with_one_worker_and_on_processes_with_more(tmp_path):
    """Mostly-Python steps would only wait for the GIL on threads; the run leaves the garbage collector as it was,
    even when a step fails."""
    declared = Stage("where", [Line("a"), Line("b")], [Each("Where", WhereItRan(), Line, runs="python")], (Note,),
                     str(tmp_path))
    thresholds = gc.get_threshold()
    here = Note(f"{os.getpid()} {threading.current_thread().name}")
    assert list(LocalExecutor().run(declared)) == [here, here]
    assert not {n.what.split()[0] for n in LocalExecutor(workers=2).run(declared)} & {str(os.getpid())}
    with pytest.raises(ValueError, match="a step's own error"):
        list(LocalExecutor().run(stage([*LINES, "fail"], tmp_path)))
    assert gc.get_threshold() == thresholds
