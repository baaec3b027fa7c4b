"""arq entry point for the ``media`` lane: ``arq workers.media.WorkerSettings``.

The usual way to run workers is ``aijobs worker --lanes media``; both run the same task.
"""

from aijobs.worker_process import arq_settings

WorkerSettings = arq_settings("media")
