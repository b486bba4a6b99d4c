"""Pipeline options shared by mmindex's pipelines, the choice of runner, runner profiles, and running a job.

With no ``--runner``, pipelines run on Beam's in-process FnApiRunner, named explicitly so that Beam
never tries to download a runner binary. ``workers`` > 1 uses that many processes on this machine
(multi_processing; multi_threading was seen to lose records). Any other Beam option passes through.

The Beam executor (pipelines.executor) gives every stage a shape that every runner runs, Beam's DaskRunner
(2.77) included, which translates a pipeline into Dask bags and is narrower than the others:
- a side input of a computed PCollection fails (the runner puts a Dask collection into the task graph, which
  cannot be serialised), so steps meet through CoGroupByKey or a GroupByKey into one group instead;
- every output of a multi-output ParDo lands in one bag, so each step has one output and consumers tell the
  kinds of element apart by type (beam.Filter);
- what a DoFn emits in finish_bundle is dropped (BatchElements' last batch of each bundle, for one), so steps
  emit everything in process, and the embed step forms its own batches;
- only the last transform applied is computed, so every branch must flow into it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pipelines.failures import worker_errors

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineRunner


def runner_and_options(beam_args: list[str], workers: int = 1) -> tuple[PipelineRunner | None, PipelineOptions]:
    """The runner to use (None: the one ``--runner`` names) and the pipeline options."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    if any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        return None, PipelineOptions(beam_args)
    mode = "in_memory" if workers == 1 else "multi_processing"
    defaults = [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in beam_args):
        # Worker processes: Beam's own chatter off, mmindex's progress lines on.
        defaults += ["--default_sdk_harness_log_level=WARNING", '--sdk_harness_log_level_overrides={"mmindex":"INFO"}']
    return FnApiRunner(), PipelineOptions([*beam_args, *defaults])


def main(run: Callable[[], Any]) -> None:
    """``python -m pipelines.<stage>``: runs the stage on Beam and prints its report as JSON. Usage errors,
    --help and failures the user can act on come out as the mmindex command shows them."""
    import typer

    from mmindex.console import errors

    logging.basicConfig(level=logging.INFO)
    try:
        with errors():
            report = run()
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.TyperException as usage:  # the command's own usage errors
        usage.show()  # type: ignore[attr-defined]
        sys.exit(usage.exit_code)  # type: ignore[attr-defined]
    print(json.dumps(asdict(report), indent=2, default=str))


def run_to_completion(pipeline: Any) -> None:
    """Runs a pipeline and waits for it: leaving a ``with`` block does not wait on every runner (DaskRunner's
    run returns at once). A job the cluster gave up on, after losing the workers that ran its tasks more times
    than it retries, is one plain line; what the job committed stays committed, and a new run completes it."""
    with worker_errors():
        result = pipeline.run()
        try:
            result.wait_until_finish()
        except _lost_workers() as err:
            raise RuntimeError(f"a cluster worker died running this job ({type(err).__name__}: the cluster gave "
                               f"up on its task); what was committed is whole: check the workers (memory, logs) "
                               f"and run the same command again") from None
        finally:
            client = getattr(result, "client", None)  # DaskRunner's connection to the scheduler
            if client is not None:
                client.close()


def _lost_workers() -> tuple[type[BaseException], ...]:
    try:
        from distributed import KilledWorker
    except ImportError:  # no Dask installed: no Dask job to lose
        return ()
    return (KilledWorker,)
