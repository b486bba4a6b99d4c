"""Any stage declared with mmindex.stages, as a Beam pipeline for any runner: one labelled transform per step.

    Start -> [Spread] -> Each step: one ParDo over the stream, which passes on what the step does not take
          -> ByKey / Whole step: what it takes, keyed and grouped -> the step; flattened with what goes around it
          -> ... -> Gather -> Outcome

ByKey keys the elements it takes and groups them (GroupByKey) before the step; Whole groups them all under one
key. A run of consecutive parallel Each steps (``runs`` io, cpu, python or workers) is spread over the workers first
(Reshuffle), and then runs fused, as the in-process executor fuses such steps onto its processes. Every
transform costs each element that goes through it, so an Each step is a single ParDo, and only grouping steps
split the stream. The shape is one every runner runs, Beam's DaskRunner included (see pipelines.options): no side
inputs (steps meet through GroupByKey), one output per step (what a grouping step takes and what goes around it
are told apart by type, with beam.Filter), nothing emitted in finish_bundle, and a single sink, Outcome, applied
last, which every branch flows into.

The workers share nothing with the driver but storage, so Outcome writes what reached the end of the steps as a
small JSON file in the stage's scratch area, and the driver reads it back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from mmindex import storage
from mmindex.stages import PARALLEL, ByKey, Each, Stage, Step, Worker, set_up, tear_down
from pipelines.options import run_to_completion, runner_and_options


class StepFn(beam.DoFn):
    """One step on a Beam worker: its function set up once per DoFn instance, as the step asks."""

    def __init__(self, step: Step):
        self.step = step

    def setup(self) -> None:
        set_up(self.step.fn, Worker())

    def teardown(self) -> None:
        tear_down(self.step.fn)

    def process(self, element: Any) -> Iterator[Any]:
        if isinstance(self.step, Each):  # it sees every element, and passes on those it does not take
            yield from self.step.fn(element) if self.step.wants(element) else (element,)
        elif isinstance(self.step, ByKey):
            key, group = element
            yield from self.step.fn(key, list(group))
        else:
            yield from self.step.fn(list(element[1]))


def _passes(element: Any, step: Step) -> bool:
    return not step.wants(element)


def _keyed(element: Any, step: Step) -> Iterator[tuple[Any, Any]]:
    """What the grouping ``step`` takes, under its key (one key for a Whole step); the rest goes around it."""
    if step.wants(element):
        yield (step.key(element) if isinstance(step, ByKey) else None), element


def apply(stream: beam.PCollection, step: Step, spread: bool) -> beam.PCollection:
    """The stream after ``step``: its outputs and the elements it passes on. An Each step is one ParDo over the
    whole stream (a transform costs every element that goes through it); a step that groups gets only what it
    takes, and the rest goes around it."""
    if spread:
        stream = stream | f"{step.name}: spread" >> beam.Reshuffle()
    if isinstance(step, Each):
        return stream | step.name >> beam.ParDo(StepFn(step))
    made = (stream
            | f"{step.name}: takes" >> beam.FlatMap(_keyed, step)
            | f"{step.name}: group" >> beam.GroupByKey()
            | step.name >> beam.ParDo(StepFn(step)))
    passed = stream | f"{step.name}: passes" >> beam.Filter(_passes, step)
    return (made, passed) | f"{step.name}: out" >> beam.Flatten()


def build(pipeline: beam.Pipeline, stage: Stage, outcome_path: str) -> None:
    stream = pipeline | "Start" >> beam.Create(stage.start)
    previous: Step | None = None
    for step in stage.steps:
        parallel = isinstance(step, Each) and step.runs in PARALLEL
        fused = parallel and isinstance(previous, Each) and previous.runs in PARALLEL
        stream = apply(stream, step, spread=parallel and not fused)
        previous = step
    # An element that is always there, so that Outcome runs (and its file is written) when nothing else is.
    always = pipeline | "Always" >> beam.Create([None])
    _ = ((stream, always)
         | "All" >> beam.Flatten()
         | "Gather" >> beam.Map(lambda element: (None, element))
         | "AllFacts" >> beam.GroupByKey()
         | "Outcome" >> beam.Map(write_outcome, outcome_path))


class BeamExecutor:
    """Runs stages as Beam pipelines: on the runner ``beam_args`` name, else Beam's in-process runner with
    ``workers`` processes."""

    local = False

    def __init__(self, beam_args: list[str], workers: int = 1):
        self.beam_args, self.workers = beam_args, workers

    def describe(self) -> dict[str, Any]:
        return {"runner": next((a.split("=", 1)[1] for a in self.beam_args if a.startswith("--runner=")),
                               "in-process")}

    def run(self, stage: Stage) -> Iterator[Any]:
        runner, options = runner_and_options(self.beam_args, self.workers)
        pipeline = beam.Pipeline(runner=runner, options=options)
        outcome_path = f"{stage.scratch}-outcome.json"
        build(pipeline, stage, outcome_path)
        run_to_completion(pipeline)
        facts = decode(json.loads(storage.read_bytes(outcome_path)), {_name(cls): cls for cls in stage.facts})
        storage.delete([outcome_path])
        yield from facts


# --- the outcome file: what reached the end, as JSON -----------------------------------------------------------

def write_outcome(group: tuple[None, Iterable[Any]], path: str) -> None:
    storage.write_atomic(path, json.dumps(encode([fact for fact in group[1] if fact is not None])).encode())


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(value: Any) -> Any:
    """JSON for dataclasses (named by module and class), tuples, and dicts with keys of any type."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"~class": _name(type(value)), "fields": fields}
    if isinstance(value, tuple):
        return {"~tuple": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"~dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    return value


def decode(value: Any, facts: dict[str, type]) -> Any:
    """What ``encode`` wrote; of classes, only those of the stage's facts are made."""
    if isinstance(value, list):
        return [decode(v, facts) for v in value]
    if not isinstance(value, dict):
        return value
    if "~tuple" in value:
        return tuple(decode(v, facts) for v in value["~tuple"])
    if "~dict" in value:
        return {decode(k, facts): decode(v, facts) for k, v in value["~dict"]}
    if value["~class"] not in facts:
        raise ValueError(f"the pipeline's outcome names {value['~class']!r}, which is not one of the stage's facts")
    return facts[value["~class"]](**{k: decode(v, facts) for k, v in value["fields"].items()})
