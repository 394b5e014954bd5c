"""The "Videos" extra link of the download and batch operators: the task instance's gallery page.

Computed on the worker and kept in XCom, so it shows for everyone who sees the task, with no provider
on the api-server needed to draw it. It opens the gallery as a page of its own (not the UI's tab): that
works for every role that may read the DAG, also where a role may not see plugin tabs (with the FAB
auth manager only Op and Admin read plugins).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_videoquery.ui import urls


class VideosLink(BaseOperatorLink):
    """Opens the gallery of this task instance's videos."""

    name = "Videos"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or "/"
        return urls.page_url(base, ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)
