"""The gallery's URLs, built in one place: pages, JSON, media, and the tabs' href templates.

Ids go into path segments, percent-encoded (a ``+`` or ``:`` in a run id survives; a query string
would turn ``+`` into a space). Airflow 3.1 fills a tab's ``{RUN_ID}`` unencoded, which a path segment
also takes.
"""

from __future__ import annotations

from urllib.parse import quote

#: Where the plugin's FastAPI app is mounted on the api-server (under ``[api] base_url``'s path).
PREFIX = "/videoquery"
#: What Airflow 3.3.2 leaves in a task-instance tab's URL for an unmapped task: read as -1.
MAP_INDEX_PLACEHOLDER = "{MAP_INDEX}"


def segment(value: str | int) -> str:
    return quote(str(value), safe="")


def run_path(dag_id: str, run_id: str) -> str:
    """``/dags/<dag>/runs/<run>``, relative to the app."""
    return f"/dags/{segment(dag_id)}/runs/{segment(run_id)}"


def task_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    return f"{run_path(dag_id, run_id)}/tasks/{segment(task_id)}/{segment(map_index)}"


def media_path(dag_id: str, run_id: str, task_id: str, map_index: int, kind: str, key: str) -> str:
    return f"{task_path(dag_id, run_id, task_id, map_index)}/media/{segment(kind)}/{segment(key)}"


def parse_map_index(value: str) -> int | None:
    """A map index from a URL: an integer >= -1, or 3.3.2's literal placeholder for an unmapped task."""
    if value == MAP_INDEX_PLACEHOLDER:
        return -1
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= -1 else None


def page_url(base_url: str, dag_id: str, run_id: str, task_id: str | None = None, map_index: int = -1) -> str:
    """The gallery page of a run, or of one task instance, under the api-server's ``base_url``."""
    path = run_path(dag_id, run_id) if task_id is None else task_path(dag_id, run_id, task_id, map_index)
    return f"{base_url.rstrip('/')}{PREFIX}{path}"


def tab_hrefs(root_path: str) -> tuple[str, str]:
    """The run tab's and the task-instance tab's href templates, under the api-server's root path."""
    base = f"{root_path.rstrip('/')}{PREFIX}"
    run = f"{base}/dags/{{DAG_ID}}/runs/{{RUN_ID}}"
    return run, f"{run}/tasks/{{TASK_ID}}/{MAP_INDEX_PLACEHOLDER}"
