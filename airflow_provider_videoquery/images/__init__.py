"""Images in create requests: references in storage turned into what each route takes, checked first.

* :mod:`.refs` — what a value is (URL, ``data:`` URI, local path, stored object) and how it is shown;
* :mod:`.sniff` — image type by magic bytes, pixel size from the header;
* :mod:`.rules` — the shape of a route's image rules (the rules are data in ``create_fields``);
* :mod:`.checks` — every problem of a request's images, before anything is paid for;
* :mod:`.stored` — reading a stored image's facts and bytes through ``ObjectStoragePath``;
* :mod:`.presign` — S3/GCS presigned URLs through their Airflow hooks;
* :mod:`.multipart` — an image as a file part of a multipart create, opened when the request is sent;
* :mod:`.inputs` — ``ImageInputs``: what the operators call to check and to resolve a request.

The first four are pure; only the last four import Airflow's storage.
"""
