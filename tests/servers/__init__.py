"""Real protocol servers started as local processes for the tests (there is no Docker engine)."""
