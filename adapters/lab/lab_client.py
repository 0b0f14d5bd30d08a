"""HTTP client for a Jarvis-compatible lab (a user's own server or labtune's reference lab).

Retries with exponential backoff and jitter only where waiting can help (HTTP 5xx, connection
errors, timeouts); a 4xx means the request is wrong and fails at once. Every response is validated
against ``adapters.lab.lab_schema``, which accepts the extra fields users' labs add.

Thread safety: each thread gets its own ``requests.Session`` (sessions are not documented as
thread-safe), so one client can be shared by a small thread pool; ``retries_used`` is counted
under a lock.

    client = LabClient("http://127.0.0.1:8000")
    client.run_phase_experiment(phase_type="spt_cluster", system_size=16).summary.string_order
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ValidationError

from adapters.lab.lab_schema import (DiscoveryResponse, HealthResponse, PhaseExperimentResponse, ReplayDriftResponse,
                                 TRIResponse)
from adapters.user_errors import UserInputError

R = TypeVar("R", bound=BaseModel)
START_HINT = "start it with python -m adapters.lab.lab_server --port 8000 or pass --lab-url"


class LabError(RuntimeError, UserInputError):
    """Any failure talking to the lab; ``retryable`` tells a Prefect retry_condition_fn what to do.

    A user error: the lab is the user's to start, reach or fix, so the CLIs report it as one line.
    """

    retryable = False


class LabRequestError(LabError):
    """The lab rejected the request (HTTP 4xx): fix the request, retrying cannot help."""

    def __init__(self, method: str, url: str, status: int, body: str):
        super().__init__(f"lab rejected {method} {url} with HTTP {status}: {body}")
        self.url, self.status, self.body = url, status, body


class LabServerError(LabError):
    """The lab kept answering HTTP 5xx until the retries ran out."""

    retryable = True

    def __init__(self, url: str, status: int, body: str, attempts: int):
        super().__init__(f"lab at {url} answered HTTP {status} on all {attempts} attempts; last body: {body}")
        self.url, self.status, self.body = url, status, body


class LabUnreachableError(LabError):
    """No answer at all: connection refused/reset, DNS failure, or a timeout on every attempt."""

    retryable = True


class LabResponseError(LabError):
    """The lab answered 2xx but the body is not what the Jarvis API promises."""


class LabClient:
    """Client of the Jarvis lab API; methods return validated ``adapters.lab.lab_schema`` models."""

    def __init__(self, base_url: str, timeout: float = 30.0, retries: int = 4, backoff: float = 0.5):
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout}, {retries}, {backoff}")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.retries_used = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._jitter = random.Random()

    def health(self) -> HealthResponse:
        """``GET /health``."""
        return self._call("GET", "health", None, HealthResponse)

    def run_phase_experiment(self, **params: Any) -> PhaseExperimentResponse:
        """``POST /run_phase_experiment``; params as in the API (phase_type, system_size, depth, seed, bias)."""
        return self._call("POST", "run_phase_experiment", params, PhaseExperimentResponse)

    def tri(self, **params: Any) -> TRIResponse:
        """``POST /tri``: features at bias and 1 - bias, and their L2 distance."""
        return self._call("POST", "tri", params, TRIResponse)

    def discovery(self, **params: Any) -> DiscoveryResponse:
        """``POST /discovery``: k-means of runs of several phases."""
        return self._call("POST", "discovery", params, DiscoveryResponse)

    def replay_drift(self, **params: Any) -> ReplayDriftResponse:
        """``POST /replay_drift``: the same experiment at growing depth."""
        return self._call("POST", "replay_drift", params, ReplayDriftResponse)

    def close(self) -> None:
        """Close every thread's session."""
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> "LabClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def _call(self, method: str, endpoint: str, params: dict | None, model: type[R]) -> R:
        """Send one request with retries; parse and validate the answer."""
        url = f"{self.base_url}/{endpoint}"
        attempts = self.retries + 1
        failure, last_5xx = "", None
        for attempt in range(attempts):
            if attempt:
                with self._lock:
                    self.retries_used += 1
                time.sleep(self.backoff * 2 ** (attempt - 1) + self._jitter.uniform(0, self.backoff))
            try:
                resp = self._session().request(method, url, json=params, timeout=self.timeout)
            except requests.Timeout:
                failure = f"no answer within {self.timeout:g} s"
                continue
            except requests.ConnectionError as exc:
                failure = _connection_reason(exc)
                continue
            if resp.status_code >= 500:
                failure = f"HTTP {resp.status_code}"
                last_5xx = resp
                continue
            if resp.status_code >= 400:
                raise LabRequestError(method, url, resp.status_code, resp.text[:2000])
            return _validate(resp, endpoint, model)
        if last_5xx is not None and failure.startswith("HTTP "):
            raise LabServerError(url, last_5xx.status_code, last_5xx.text[:2000], attempts)
        raise LabUnreachableError(f"lab at {self.base_url} is unreachable ({failure}; {attempts} attempts at "
                                  f"/{endpoint}); {START_HINT}")


def _connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc).lower()
    for needle, reason in (("refused", "connection refused"), ("reset", "connection reset"),
                           ("name or service", "host not found"), ("nodename", "host not found"),
                           ("no route", "no route to host")):
        if needle in text:
            return reason
    return f"connection failed: {type(exc).__name__}"


def _validate(resp: requests.Response, endpoint: str, model: type[R]) -> R:
    """The response body as ``model``; a mismatch names the endpoint and the offending field."""
    try:
        body = resp.json()
    except ValueError:
        raise LabResponseError(f"/{endpoint} at {resp.url} answered HTTP {resp.status_code} with a body that is "
                               f"not JSON: {resp.text[:200]!r}") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(body)"
        raise LabResponseError(
            f"/{endpoint} response does not match the Jarvis API: field {field!r}: {first['msg']} "
            f"(got {str(first.get('input'))[:100]!r}; {exc.error_count()} problem(s) in all)") from None
