"""Real OpenStack servers for the integration tests: Mistral 23 and Keystone 30,
each installed into a private virtualenv and run as real processes.

- :mod:`.install`, :mod:`.pins`: the virtualenvs and what goes into them.
- :mod:`.config`, :mod:`.postgres`: the config files, the throwaway database.
- :mod:`.mistral_server`, :mod:`.keystone_server`: start (and wait until
  ready), stop, status.
- :mod:`.mistral_cli`, :mod:`.keystone_cli`: the command lines of
  ``scripts/mistral-server`` and ``scripts/keystone-server``, also runnable as
  ``python -m mistral_cache.testing.openstack.mistral_cli``; what they share is
  in :mod:`.cli`.
- :mod:`.common`: what all of them share (probes, processes, logs, secrets, and
  the start/stop steps both servers take alike).

Standard library only, and nothing is imported here: the shims in ``scripts/``
load this package even under a python3 without the project's dependencies.
"""

from __future__ import annotations

__all__: list[str] = []
