"""The video gallery in the Airflow UI: a plugin (tabs, routes, page) over what the operators record.

Split like the rest of the provider: :mod:`.xcom` is the record the operators write and the gallery
reads, :mod:`.model` turns records into cards (pure), :mod:`.source` reads them from Airflow's DB and the
ledgers, :mod:`.media` serves stored bytes with ``Range``, :mod:`.routes` is the FastAPI app and
:mod:`.plugin` registers it. Nothing here is imported by the package's ``__init__``.
"""
