"""The registry of transfer modules: built-ins, entry points from other packages, clear errors."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

from blocks import registry
from blocks.base import HostBlock
from catalog.errors import InvalidInput
from catalog.models import Host


@pytest.fixture
def fresh_registry(monkeypatch):
    registry.protocols.cache_clear()
    yield monkeypatch
    registry.protocols.cache_clear()


def test_every_builtin_protocol_imports_and_declares_its_name():
    for protocol in registry.BUILTIN:
        assert registry.block_class(protocol).protocol == protocol


def test_a_package_can_register_a_protocol_through_an_entry_point(fresh_registry):
    module = types.ModuleType("pds_example_plugin")

    class ExampleHost(HostBlock):
        _block_type_name = "pds Example Host"
        protocol = "example"

    module.ExampleHost = ExampleHost
    fresh_registry.setitem(sys.modules, "pds_example_plugin", module)
    fake = [EntryPoint("example", "pds_example_plugin:ExampleHost", registry.ENTRY_POINT_GROUP)]
    fresh_registry.setattr(registry, "entry_points", lambda group: fake if group == registry.ENTRY_POINT_GROUP else [])
    assert "example" in registry.known_protocols()
    assert isinstance(registry.block_for(Host(name="x", protocol="example")), ExampleHost)


def test_unknown_and_uninstallable_protocols_say_what_to_do(fresh_registry):
    with pytest.raises(InvalidInput, match="unknown protocol 'gopher'; known: .*sftp"):
        registry.block_class("gopher")
    fake = [EntryPoint("broken", "pds_not_installed_anywhere:Host", registry.ENTRY_POINT_GROUP)]
    fresh_registry.setattr(registry, "entry_points", lambda group: fake)
    registry.protocols.cache_clear()
    with pytest.raises(InvalidInput, match="needs pds_not_installed_anywhere.*pip install"):
        registry.block_class("broken")
