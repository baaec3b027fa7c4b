"""arq entry point for the ``batch`` lane: ``arq workers.batch.WorkerSettings``.

The usual way to run workers is ``aijobs worker --lanes batch``; both run the same task.
"""

from aijobs.worker_process import arq_settings

WorkerSettings = arq_settings("batch")
