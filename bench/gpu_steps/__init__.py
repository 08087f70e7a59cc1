"""bench/gpu_suite.py's steps and plumbing (see its docstring). Imported by the driver by path,
as `gpu_steps`: bench/ stays off sys.path. Standard library only at import: torch & co. are
imported inside the steps, so the driver never touches CUDA.

    core         paths, targets, modes, the step registry, Ctx (a step's view of its run)
    child        a step's own process: the device's import conditions, the result as JSON
    launch       the driver's side of a step: process group, budget, log, record
    wheels       pydantic & co. from .whl/ for the device
    report       targets met, the closing table
    timing       what the e2e steps share: the timing matrix, vlserve vs the references
    environment, kernel_tests (+ pytest_plugin), kernel_bench, e2e_blip, e2e_coca, e2e_beit3,
    selftest     the steps, registered in this order (the run order)
"""

from . import environment, kernel_tests, kernel_bench, e2e_blip, e2e_coca, e2e_beit3, selftest  # noqa: F401
