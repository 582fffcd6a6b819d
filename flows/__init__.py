"""Orchestration only: decisions come from `catalog`, bytes from `tasks`."""
