"""An auth manager for the gallery's API tests: Airflow's simple one, with one DAG no viewer may read."""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

HIDDEN_DAG = "videoquery_hidden_dag"


class OneDagHidden(SimpleAuthManager):  # type: ignore[misc]
    """Like the simple auth manager, except that only admins may read :data:`HIDDEN_DAG`."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if details is not None and details.id == HIDDEN_DAG and user.role != "ADMIN":
            return False
        return bool(
            super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
        )
