"""Every outside surface of pds: the Litestar app, the `pds` command, the Python client."""
