"""What the browser tests' page objects share: the driver, the UI's base URL, and a wait for an element."""

from __future__ import annotations

from typing import Any

#: Seconds for any one thing in a page to appear (a shared 2-core machine).
WAIT = 60.0


class Page:
    """Airflow's UI as a user clicks it (selectors read off the live pages)."""

    def __init__(self, driver: Any, base_url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.base_url = base_url
        self.wait = WebDriverWait(driver, WAIT)

    def _find(self, xpath: str, clickable: bool = False) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        condition = ec.element_to_be_clickable if clickable else ec.visibility_of_element_located
        return self.wait.until(condition((By.XPATH, xpath)))
