"""Webhooks: signed, retried, observable callbacks for job events (Standard Webhooks).

- :mod:`~aijobs.webhooks.signing`    secrets (``whsec_…``), rotation, the ``webhook-*`` headers
- :mod:`~aijobs.webhooks.endpoints`  a tenant's registered endpoints and its job-webhook secret
- :mod:`~aijobs.webhooks.deliveries` one record per (event, destination): attempts, state, schedule
- :mod:`~aijobs.webhooks.dispatch`   the two tasks on the ``webhooks`` lane: fan out, send once

An event's script enqueues the fan-out (:mod:`aijobs.events`); the fan-out writes deliveries and
enqueues their first sends in one step; each send is one attempt, and schedules the next in the same
step that records it. A job's own run never waits on any of this.
"""
