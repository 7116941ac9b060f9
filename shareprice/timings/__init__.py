"""v1 (JSON) against v2 (normalized) timings: the shapes measured, the measurement itself
(cold and warm cache, memory, bytes, EXPLAIN plans, a bare-cursor floor), stored runs, and the job
protocol that lets the timings page start, follow and stop a run in its own process.

Callers import this package, never its modules. The modules: `shape_catalog` (the named and
custom request shapes), `results` (what a run produces, as stored, carried and tabled),
`measure` (the quick benchmark and the detailed measurement), `runs` (a detailed run, recorded
in timing_runs / timing_results / timing_plans), `jobs` (the subprocess protocol, both the page's
and the child's side). The figures are in `shareprice.display.timing_charts`.

May import: shareprice.queries, shareprice.store, shareprice.errors.
"""

from shareprice.timings.jobs import (
    TimingJob,
    custom_prefill,
    custom_request,
    event_line,
    job_arguments,
    job_outcome,
    job_progress,
    progress_text,
    set_statement_timeout,
    stop_on_sigterm,
)
from shareprice.timings.measure import (
    BenchmarkResult,
    ShapeResult,
    TimeLimitReached,
    database_profile,
    explain_v1,
    explain_v2,
    floor_plan,
    make_cold,
    measure_floor,
    measure_shape,
    measure_shape_detailed,
    run_benchmark,
)
from shareprice.timings.results import (
    CACHE_STATES,
    VARIANTS,
    DetailedRun,
    DetailedShape,
    PathTiming,
    shapes_from_dicts,
)
from shareprice.timings.runs import (
    finish_run,
    history,
    load_run,
    mark_finished,
    run_detailed,
    save_shape,
    start_run,
)
from shareprice.timings.shape_catalog import (
    CUSTOM_SHAPE,
    SHAPE_NAMES,
    Shape,
    custom_shape,
    longest_operators,
    request_dict,
    shapes,
)

__all__ = [
    "BenchmarkResult",
    "CACHE_STATES",
    "CUSTOM_SHAPE",
    "DetailedRun",
    "DetailedShape",
    "PathTiming",
    "SHAPE_NAMES",
    "Shape",
    "ShapeResult",
    "TimeLimitReached",
    "TimingJob",
    "VARIANTS",
    "custom_prefill",
    "custom_request",
    "custom_shape",
    "database_profile",
    "event_line",
    "explain_v1",
    "explain_v2",
    "finish_run",
    "floor_plan",
    "history",
    "job_arguments",
    "job_outcome",
    "job_progress",
    "load_run",
    "longest_operators",
    "make_cold",
    "mark_finished",
    "measure_floor",
    "measure_shape",
    "measure_shape_detailed",
    "progress_text",
    "request_dict",
    "run_benchmark",
    "run_detailed",
    "save_shape",
    "set_statement_timeout",
    "shapes",
    "shapes_from_dicts",
    "start_run",
    "stop_on_sigterm",
]
