"""The sweep engine: stacked init, vmapped train step, chunked loop, evaluation, checkpoints, memory.

The pure program and its host driver only: :mod:`sweepjax.engine.train` (one group),
:mod:`~sweepjax.engine.memory`, :mod:`~sweepjax.engine.checkpoint`, :mod:`~sweepjax.engine.lock`,
:mod:`~sweepjax.engine.optim`. Running a whole sweep (grid, results, fit) is :mod:`sweepjax.run`,
which sits above the engine: nothing here imports it or :mod:`sweepjax.results`.
"""
