"""A simulated Mistral v2 REST endpoint on loopback, for the bundled benchmarks.

Faithful enough that the real ``python-mistralclient`` runs end to end against it
(URLs, query parameters, filters, pagination, JSON shapes and error bodies follow
Mistral 23's API controllers), with service times drawn around the figures measured
on a real server, executions that move through states over (injectable) time, and a
ground-truth record of every resource version so a benchmark can count stale reads.

The integration tests use a real Mistral server; this is for benchmarks only.

    with SimulatedMistral(latency_scale=1.0, seed=1) as sim:
        names = sim.seed_workflows(20)
        ids = sim.seed_executions(500, running_fraction=0.2)
        client = mistralclient.api.client.client(mistral_url=sim.url)
        data = client.executions.get(ids[0]).to_dict()
        lag = sim.staleness_of("executions", ids[0], data)  # 0.0: it was fresh

Modules, lowest first: :mod:`.schema` (resource kinds, versions, timestamps, the API
error), :mod:`.dsl` (the workflow language, a YAML subset), :mod:`.store` (clock,
scheduler, resources with their history), :mod:`.model` (executions and tasks, the
state machine), :mod:`.definitions` (workflows, workbooks, cron triggers),
:mod:`.request`, :mod:`.reads` (gets, lists: fields, filters, sorting, pagination),
:mod:`.writes`, :mod:`.api` (routes, dispatch, errors, service time), :mod:`.server`
(HTTP), :mod:`.notifier` (the webhook notifier: a POST per state change, after
it commits), :mod:`.simulator` (the :class:`SimulatedMistral` facade). ``python -m
benchmarks.sim_mistral`` runs one in the foreground.
"""

from .api import SERVICE_TIME_MS
from .dsl import workflow_definition
from .notifier import Notifier, PostDelay
from .schema import DEFAULT_PROJECT, Version
from .simulator import SimulatedMistral
from .store import ManualClock

__all__ = ["DEFAULT_PROJECT", "SERVICE_TIME_MS", "ManualClock", "Notifier", "PostDelay", "SimulatedMistral", "Version",
           "workflow_definition"]
