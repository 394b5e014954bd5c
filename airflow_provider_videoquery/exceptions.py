"""Exceptions a DAG author can catch, each carrying what the gateway said and what to do next."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class VideoQueryError(AirflowException):
    """Base class for every error this provider raises about the gateway."""


class VideoQueryAuthError(VideoQueryError, AirflowFailException):
    """The gateway refused the API key (401/403). Permanent and not retried: fix the connection's password."""


class VideoTaskNotFoundError(VideoQueryError):
    """The gateway does not know this task id (400 ``task_not_exist`` or 404). Permanent."""


class VideoQueryTransientError(VideoQueryError):
    """Rate limits, 5xx, timeouts or resets that outlasted every retry."""


class VideoCreateUncertainError(VideoQueryTransientError, AirflowFailException):
    """A create the gateway may have received gave no task id (timeout after sending, reset, 5xx, an
    answer without an id). Not retried, by the hook or by Airflow, so no second video is paid for.

    ``what`` names the create (model, gateway), ``problem`` what went wrong, ``check`` what to look
    for at the gateway before creating again.
    """

    def __init__(self, message: str, *, what: str = "", problem: str = "", check: str = "") -> None:
        super().__init__(message)
        self.what = what
        self.problem = problem
        self.check = check


class VideoQueryUnreachableError(VideoQueryTransientError):
    """Nothing answered at the gateway's address (refused, unknown host, TLS to a plain-HTTP port):
    usually a wrong scheme, host, port or proxy rather than an outage."""


class VideoQueryResponseError(VideoQueryError):
    """The gateway answered something that is not the JSON it promised."""


class VideoQueryRequestError(VideoQueryError):
    """The gateway rejected the request itself (a 4xx other than auth and unknown task)."""


class VideoCreateRequestError(VideoQueryRequestError, AirflowFailException, ValueError):
    """A create request refused before it was sent (no model or prompt, or a field value its model
    family does not accept). Nothing was paid for; not retried: fix the request. ``problems`` lists
    each one."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class VideoTaskFailedError(AirflowFailException):
    """The gateway reports the video task as failed (moderation, rejected prompt): retrying won't help."""


class VideoDownloadError(VideoQueryError):
    """The video could not be stored: expired URL, not a video, too large, or an unsafe redirect."""


class VideoQueryParameterError(VideoQueryError, AirflowFailException):
    """An operator, sensor or trigger argument names nothing usable (a blank task id): fix the DAG."""
