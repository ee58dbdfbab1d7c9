"""Plugins: the user's own strategies, attacks, data sources and accountants reach every entry point.

A plugin is a module that registers what it brings (``register_strategy``, ``register_attack``,
``register_data_source``, ``register_accountant``) when imported. Installed packages declare theirs
as entry points in the group ``secure_pcft.plugins``; the command line adds ``--plugin MODULE`` (a
dotted name or a ``.py`` file). Both the CLI and the Flower apps load them before a config is read,
so a config may name what a plugin registers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from secure_pcft.errors import ConfigError

PLUGIN_GROUP = "secure_pcft.plugins"  # entry-point group of installed plugin packages


def load_plugins(explicit: Sequence[str]) -> list[str]:
    """Import every installed plugin (entry points of group ``secure_pcft.plugins``), then each
    ``--plugin`` given: modules that register strategies, attacks, data sources or accountants
    (``register_strategy``, ``register_attack``, ``register_data_source``,
    ``register_accountant``), so that a config or campaign can name them. Returns what was loaded.

    Raises:
        ConfigError: a plugin cannot be found or fails to import.
    """
    from importlib.metadata import entry_points

    loaded: list[str] = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as exc:  # a broken installed plugin is the user's input, not our bug
            raise ConfigError(
                f"plugin {ep.name!r} ({ep.value}, entry point group {PLUGIN_GROUP}) fails to "
                f"load: {type(exc).__name__}: {exc}"
            ) from None
        loaded.append(ep.name)
    for plugin in explicit:
        _import_plugin(plugin)
        loaded.append(plugin)
    return loaded


def _import_plugin(plugin: str) -> None:
    """Import a plugin module by dotted name, or a ``.py`` file by path (the user's own code).

    Raises:
        ConfigError: it cannot be found or fails to import.
    """
    try:
        if plugin.endswith(".py"):
            path = Path(plugin)
            spec = importlib.util.spec_from_file_location(f"secure_pcft_plugin_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise ImportError(f"no such file {path}")
            earlier = sys.modules.get(spec.name)
            if earlier is not None and getattr(earlier, "__file__", None) == spec.origin:
                return  # imported once per process, like a module by name (its registrations hold)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[spec.name]  # a failed import is not "imported once"
                raise
        else:
            importlib.import_module(plugin)
    except ImportError as exc:
        raise ConfigError(f"--plugin {plugin}: cannot import it ({exc})") from None
