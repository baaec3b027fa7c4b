"""arq entry point for the ``interactive`` lane: ``arq workers.interactive.WorkerSettings``.

The usual way to run workers is ``aijobs worker --lanes interactive``; both run the same task.
"""

from aijobs.worker_process import arq_settings

WorkerSettings = arq_settings("interactive")
