"""The domain of pds and its persistence: settings, entities, the status table, the Data Store.

Nothing here knows Prefect or HTTP; `blocks`, `tasks`, `flows` and `api` build on it.
"""
