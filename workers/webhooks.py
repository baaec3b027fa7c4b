"""arq entry point for the ``webhooks`` lane: ``arq workers.webhooks.WorkerSettings``.

The usual way to run workers is ``aijobs worker --lanes webhooks``; both run the same tasks.
"""

from aijobs.worker_process import arq_settings

WorkerSettings = arq_settings("webhooks")
