"""How the facade talks to Mistral: timeouts, which failures a read retries,
and how to read mistralclient's answers (a refusal, Mistral's own 404).

python-mistralclient, requests and keystoneauth1 are imported inside the
functions, so importing the facade stays cheap and lazy.
"""

from __future__ import annotations

import functools
from typing import Any

import tenacity

__all__ = [
    "DEFAULT_TIMEOUT",
    "api_exception",
    "is_transient",
    "is_refused",
    "is_mistral_not_found",
    "default_retry",
    "install_timeout",
    "http_client_of",
    "is_requests_session",
]

#: Default (connect, read) timeouts put on the client's requests session.
DEFAULT_TIMEOUT = (3.05, 30.0)


def api_exception() -> type[Exception]:
    """mistralclient's ``APIException`` (imported on first use)."""
    from mistralclient.api.base import APIException

    cls: type[Exception] = APIException
    return cls


def is_refused(exc: BaseException) -> bool:
    """Mistral answered with a 4xx: the write was not applied."""
    code = getattr(exc, "error_code", None)
    return isinstance(exc, api_exception()) and isinstance(code, int) and 400 <= code < 500


def is_transient(exc: BaseException) -> bool:
    """Worth retrying an idempotent read: a connection failure, a timeout, a 5xx
    (requests' own, or keystoneauth's when the client talks through a session)."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    try:  # keystoneauth1 comes with python-mistralclient; imported here, not at import time
        from keystoneauth1.exceptions import RetriableConnectionFailure
    except ImportError:  # pragma: no cover
        pass
    else:
        if isinstance(exc, RetriableConnectionFailure):
            return True
    code = getattr(exc, "error_code", None)
    return isinstance(exc, api_exception()) and isinstance(code, int) and code >= 500


def is_mistral_not_found(exc: BaseException) -> bool:
    """A 404 that Mistral itself answered. mistralclient turns any keystoneauth HTTP
    error into ``APIException`` -- Keystone's "token not found" during a session's
    re-authentication too, with no message, as Mistral's own 404s always have one."""
    if getattr(exc, "error_code", None) != 404:
        return False
    message = getattr(exc, "error_message", None)
    if not isinstance(message, str) or not message.strip():
        return False
    lowered = message.lower()
    return "token" not in lowered or "not found" not in lowered and "could not" not in lowered


def default_retry() -> tenacity.Retrying:
    """Bounded: at most 4 attempts within about 10 s, exponential backoff with jitter."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(4) | tenacity.stop_after_delay(10),
        wait=tenacity.wait_exponential_jitter(initial=0.1, max=2.0),
        reraise=True,
    )


def install_timeout(session: Any, timeout: Any) -> None:
    """Give a session a default timeout: requests sets none, nor does mistralclient."""
    if timeout is None or session is None:
        return
    import requests

    if isinstance(session, requests.Session):
        if getattr(session, "_mistral_cache_timeout", None) is not None:
            session._mistral_cache_timeout = timeout  # type: ignore[attr-defined]
            return
        original = session.request

        @functools.wraps(original)
        def request(method: Any, url: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = session._mistral_cache_timeout  # type: ignore[attr-defined]
            return original(method, url, **kwargs)

        session._mistral_cache_timeout = timeout  # type: ignore[attr-defined]
        setattr(session, "request", request)  # noqa: B010 (an instance attribute, on purpose)
    elif hasattr(session, "timeout") and session.timeout is None:  # a keystoneauth1 Session
        session.timeout = timeout[1] if isinstance(timeout, tuple) else timeout


def is_requests_session(session: Any) -> bool:
    """No session, or a plain ``requests.Session`` (no keystoneauth identity in it)."""
    import requests

    return session is None or isinstance(session, requests.Session)


def http_client_of(client: Any) -> Any:
    """The client's ``http_client`` (the managers hold it when the client does not)."""
    http = getattr(client, "http_client", None)
    if http is None:
        manager = getattr(client, "executions", None) or getattr(client, "workflows", None)
        http = getattr(manager, "http_client", None)
    return http
