"""The Airflow plugin: the gallery's app on the api-server and its "Videos" tabs on run and task pages.

Registered through the ``airflow.plugins`` entry point (pyproject.toml), which Airflow reads whatever
``[core] lazy_discover_providers`` says; this module imports Airflow, the package's ``__init__`` does not.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from airflow_provider_videoquery.ui import urls
from airflow_provider_videoquery.ui.routes import create_app

#: A tab's href is used as it is: it carries the api-server's base path (``[api] base_url``).
_ROOT_PATH = urlsplit(conf.get("api", "base_url", fallback="") or "/").path
_RUN_HREF, _TASK_HREF = urls.tab_hrefs(_ROOT_PATH)
_ICON = f"{_ROOT_PATH.rstrip('/')}{urls.PREFIX}/static/icon.svg"


class VideoGalleryPlugin(AirflowPlugin):
    """The video gallery: ``/videoquery`` on the api-server, a "Videos" tab on every run and task."""

    name = "videoquery_gallery"
    fastapi_apps = [{"app": create_app(), "url_prefix": urls.PREFIX, "name": "Video gallery"}]
    external_views = [
        {
            "name": "Videos",
            "href": _RUN_HREF,
            "destination": "dag_run",
            "url_route": "videoquery-run-videos",
            "icon": _ICON,
        },
        {
            "name": "Videos",
            "href": _TASK_HREF,
            "destination": "task_instance",
            "url_route": "videoquery-task-videos",
            "icon": _ICON,
        },
    ]
