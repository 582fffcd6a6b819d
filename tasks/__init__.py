"""Unit operations that move bytes; each `@task` wraps a plain function testable without Prefect."""
