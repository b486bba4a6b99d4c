"""Pipeline options shared by mmindex's pipelines, and the choice of runner.

With no ``--runner``, pipelines run on Beam's in-process FnApiRunner, named explicitly so that Beam
never tries to download a runner binary. ``workers`` > 1 uses that many processes on this machine
(multi_processing; multi_threading was seen to lose records). Any other Beam option passes through.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner


def runner_and_options(beam_args: list[str], workers: int = 1) -> tuple[PipelineRunner | None, PipelineOptions]:
    """The runner to use (None: the one ``--runner`` names) and the pipeline options."""
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    if any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        return None, PipelineOptions(beam_args)
    mode = "in_memory" if workers == 1 else "multi_processing"
    defaults = [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in beam_args):
        # Worker processes: Beam's own chatter off, mmindex's progress lines on.
        defaults += ["--default_sdk_harness_log_level=WARNING", '--sdk_harness_log_level_overrides={"mmindex":"INFO"}']
    return FnApiRunner(), PipelineOptions([*beam_args, *defaults])
