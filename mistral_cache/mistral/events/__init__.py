"""Event-driven invalidation from Mistral's notifier (README, "Mistral events").

- :mod:`.mapping`: one notification -> the tags it makes outdated (both scopes);
- :mod:`.lease`: the freshness lease that lets clients use event-backed TTLs;
- :mod:`.receiver`: the authenticated WSGI app taking the webhook's POSTs;
- :mod:`.reconcile`: the periodic ``updated_at=gte:`` sweep for lost events;
- :mod:`.publisher`: the plugin for Mistral's ``mistral.notification.publishers``;
- :mod:`.task_spec`: inside Mistral, whether a finished task published a global variable;
- :mod:`.serve`: ``mistral-cache events serve``, the app under waitress.
"""

from __future__ import annotations

from .lease import EVENT_TTL, LeaseKeeper, LeaseWatch, lease_tag
from .mapping import Event, EventError, parse_event, tags_for

__all__ = ["EVENT_TTL", "Event", "EventError", "LeaseKeeper", "LeaseWatch", "lease_tag", "parse_event", "tags_for"]
