"""One strict registry per plugin kind, filled lazily from Python entry points.

Built-in plugins (the ``xray_xai_plugins`` package) are declared in our own ``pyproject.toml`` under exactly the same
entry-point groups as third-party packages, so every test run exercises the extension mechanism.

* Entry points are *listed* on first use of a registry and each plugin class is imported on demand; nothing is
  loaded at import time of :mod:`xray_xai`.
* Registering a name twice raises :class:`~xray_xai.errors.PluginError` (torchvision's ``register_model`` does the
  same; timm's silent overwrite hides bugs). Two installed packages claiming one name make that name unusable with a
  message naming both.
* A plugin whose import fails is recorded in :meth:`Registry.failures` with its name and the error; the others keep
  working, and asking for the broken one raises with the original error in the message.
* ``XRAY_XAI_PLUGINS`` (comma-separated fnmatch patterns) restricts which entry points load: a pattern matches a
  plugin name, ``kind:name``, or the name of the distribution that provides it. Unset or empty: all load.
* **Families** (:data:`FAMILY_GROUPS`, e.g. ``xray_xai.explainer_families``): an entry point there is a *namespace*
  (``captum``) whose object is a provider, a callable returning :class:`FamilyMember` items discovered at run time
  (every attribution class of an installed library). Its members are registered as ``namespace:Member``. A family
  is expanded only when a name in its namespace is asked for or when every name is listed, so looking up a short
  name (``gradcam``) never imports the library. A member may be *unsupported*: listed with its reason, refused with
  that reason when asked for, never silently run.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from xray_xai.errors import PluginError, UnknownPluginError
from xray_xai.sdk.interfaces import Clusterer, DatasetPlugin, Explainer, Model, Plugin

__all__ = [
    "ENV_VAR",
    "FAMILY_GROUPS",
    "GROUPS",
    "FamilyMember",
    "PluginInfo",
    "Registry",
    "all_plugins",
    "clusterers",
    "datasets",
    "explainers",
    "models",
    "registry_for",
    "reset_all",
]

ENV_VAR = "XRAY_XAI_PLUGINS"

#: kind -> entry-point group. These group names are a public interface.
GROUPS: dict[str, str] = {
    "model": "xray_xai.models",
    "explainer": "xray_xai.explainers",
    "clusterer": "xray_xai.clusterers",
    "dataset": "xray_xai.datasets",
}

#: kind -> entry-point group of plugin *families* (namespaces whose members a provider discovers at run time)
FAMILY_GROUPS: dict[str, str] = {"explainer": "xray_xai.explainer_families"}

P = TypeVar("P", bound=Plugin)


@dataclass(frozen=True)
class FamilyMember:
    """One member of a family, as its provider yields it: the name inside the namespace (``DeepLift``), a loader
    returning the plugin class (called on first use), or ``unsupported``: why this member cannot be offered."""

    name: str
    loader: Callable[[], Any] | None = None
    unsupported: str | None = None


@dataclass(frozen=True)
class PluginInfo:
    """What ``xray-xai plugins`` shows for one plugin (or for one that failed to load)."""

    kind: str
    name: str
    package: str
    version: str
    description: str
    tags: dict[str, bool]
    error: str | None = None
    unsupported: str | None = None  #: a family member listed with the reason it cannot be used

    def to_dict(self) -> dict[str, Any]:
        return {
            "unsupported": self.unsupported,
            "kind": self.kind,
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "description": self.description,
            "tags": self.tags,
            "error": self.error,
        }


@dataclass
class _Entry:
    name: str
    package: str
    version: str
    loader: Callable[[], Any] | None = None  # imports the class (entry point) ...
    cls: type[Plugin] | None = None  # ... or the class itself (registered in-process)
    error: str | None = None
    unsupported: str | None = None  # a family member that cannot be used, and why


@dataclass
class _Family:
    provider: Callable[[], Any] | None  # the entry point's load (returns the provider callable)
    package: str
    version: str
    expanded: bool = False


def _allowed(kind: str, name: str, package: str) -> bool:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return True
    patterns = [p.strip() for p in raw.split(",") if p.strip()]
    candidates = (name, f"{kind}:{name}", package)
    return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)


class Registry(Generic[P]):
    """Plugins of one kind, by public name."""

    def __init__(self, kind: str, base: type[P]) -> None:
        self.kind = kind
        self.group = GROUPS[kind]
        self.base = base
        self._entries: dict[str, _Entry] | None = None
        self._families: dict[str, _Family] = {}

    # -- filling -----------------------------------------------------------------------------------------------
    def _discover(self) -> dict[str, _Entry]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, _Entry] = {}
        for ep in metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            if not _allowed(self.kind, ep.name, package):
                continue
            if ep.name in entries:
                other = entries[ep.name]
                if other.package == package:  # the same distribution seen twice on sys.path
                    continue
                other.error = (
                    f"{self.kind} {ep.name!r} is registered twice: by {other.package} and by {package}; "
                    "uninstall one of them"
                )
                other.loader = None
                continue
            entries[ep.name] = _Entry(ep.name, package, version, loader=ep.load)
        self._entries = entries
        self._families = {}
        family_group = FAMILY_GROUPS.get(self.kind)
        for ep in metadata.entry_points(group=family_group) if family_group else ():
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else "?"
            if ep.name not in self._families:
                self._families[ep.name] = _Family(ep.load, package, dist.version if dist is not None else "?")
        return entries

    def register_family(self, namespace: str, provider: Callable[[], Any], *, package: str = "__main__") -> None:
        """Register a family provider in-process (tests, notebooks): ``provider()`` returns :class:`FamilyMember`
        items, registered as ``namespace:name`` when first needed. Raises if the namespace is taken."""
        self._discover()
        if namespace in self._families:
            raise PluginError(f"{self.kind} family {namespace!r} is already registered")
        self._families[namespace] = _Family(lambda: provider, package, "")

    def families(self) -> list[str]:
        """The namespaces of the registered families (not expanded)."""
        self._discover()
        return sorted(self._families)

    def _expand(self, namespace: str) -> None:
        """Add the members of family ``namespace`` to the entries (once); a provider that fails becomes one broken
        entry ``namespace:*`` carrying its error, so the rest keep working."""
        family = self._families.get(namespace)
        entries = self._discover()
        if family is None or family.expanded:
            return
        family.expanded = True
        try:
            members = list(family.provider()()) if family.provider is not None else []
        except Exception as exc:  # a broken library must not take the CLI down
            entries[f"{namespace}:*"] = _Entry(f"{namespace}:*", family.package, family.version,
                                               error=f"{type(exc).__name__}: {exc}".splitlines()[0])  # fmt: skip
            return
        for member in members:
            key = f"{namespace}:{member.name}"
            if key in entries or not _allowed(self.kind, key, family.package):
                continue
            entries[key] = _Entry(key, family.package, family.version, loader=member.loader,
                                  unsupported=member.unsupported)  # fmt: skip

    def _expand_all(self) -> None:
        self._discover()
        for namespace in list(self._families):
            self._expand(namespace)

    def _expand_for(self, name: str) -> None:
        namespace, colon, _ = name.partition(":")
        if colon:
            self._discover()
            self._expand(namespace)

    def register(self, cls: type[P], name: str | None = None, *, package: str = "__main__") -> type[P]:
        """Register ``cls`` in-process (tests, notebooks). Raises if the name is taken. Usable as a decorator."""
        key = name or cls.name
        if not key:
            raise PluginError(f"{cls.__qualname__} has no plugin name")
        self._check_class(key, cls)
        entries = self._discover()
        if key in entries:
            raise PluginError(f"{self.kind} {key!r} is already registered (by {entries[key].package})")
        entries[key] = _Entry(key, package, "", cls=cls)
        return cls

    def unregister(self, name: str) -> None:
        """Remove a plugin registered with :meth:`register` (for tests)."""
        self._discover().pop(name, None)

    def reset(self) -> None:
        """Forget everything; the next lookup re-reads the entry points (honours a changed ``XRAY_XAI_PLUGINS``)."""
        self._entries = None
        self._families = {}

    # -- lookup ------------------------------------------------------------------------------------------------
    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names of the plugins that did not fail, optionally filtered by an fnmatch ``pattern``."""
        self._load_all()
        names = [n for n, e in self._discover().items() if e.error is None and e.unsupported is None]
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return sorted(names)

    def get(self, name: str) -> type[P]:
        """The plugin class registered under ``name``."""
        self._expand_for(name)
        entries = self._discover()
        entry = entries.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(entries)) or "none installed"
            raise UnknownPluginError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        if entry.unsupported is not None:
            raise PluginError(f"{self.kind} {name!r} ({entry.package} {entry.version}) is not supported: "
                              f"{entry.unsupported}")  # fmt: skip
        self._load(entry)
        if entry.error is not None:
            raise PluginError(f"{self.kind} {name!r} from {entry.package} failed to load: {entry.error}")
        assert entry.cls is not None
        return entry.cls  # type: ignore[return-value]  # checked against self.base on load

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self._expand_for(name)
        return isinstance(name, str) and name in self._discover()

    def failures(self) -> dict[str, str]:
        """Plugins that failed to load: name -> error message."""
        self._load_all()
        return {n: e.error for n, e in self._discover().items() if e.error is not None}

    def unsupported(self) -> dict[str, str]:
        """Family members listed but not offered: name -> the reason."""
        self._expand_all()
        return {n: e.unsupported for n, e in self._discover().items() if e.unsupported is not None}

    def infos(self) -> list[PluginInfo]:
        self._load_all()
        out = []
        for name in sorted(self._discover()):
            e = self._discover()[name]
            cls = e.cls
            out.append(
                PluginInfo(
                    kind=self.kind,
                    name=name,
                    package=e.package,
                    version=e.version,
                    description=getattr(cls, "description", "") if cls else "",
                    tags=cls.tags.as_dict(only_true=True) if cls is not None else {},
                    error=e.error,
                    unsupported=e.unsupported,
                )
            )
        return out

    # -- internals ---------------------------------------------------------------------------------------------
    def _check_class(self, name: str, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(f"{self.kind} {name!r}: {cls!r} is not a subclass of {self.base.__name__}")

    def _load(self, entry: _Entry) -> None:
        if entry.cls is not None or entry.error is not None or entry.loader is None or entry.unsupported is not None:
            return
        try:
            cls = entry.loader()
            self._check_class(entry.name, cls)
        except Exception as exc:  # a broken plugin must not take the CLI down
            entry.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return
        if getattr(cls, "name", "") not in ("", entry.name):
            entry.error = f"entry point {entry.name!r} points to a class named {cls.name!r}"
            return
        if not getattr(cls, "name", ""):  # a nameless class takes its entry point's name, without being mutated
            cls = type(cls.__name__, (cls,), {"name": entry.name, "__module__": cls.__module__})
        entry.cls = cls

    def _load_all(self) -> None:
        self._expand_all()
        for entry in list(self._discover().values()):
            self._load(entry)


models: Registry[Model] = Registry("model", Model)
explainers: Registry[Explainer] = Registry("explainer", Explainer)
clusterers: Registry[Clusterer] = Registry("clusterer", Clusterer)
datasets: Registry[DatasetPlugin] = Registry("dataset", DatasetPlugin)

_BY_KIND: dict[str, Registry[Any]] = {
    "model": models,
    "explainer": explainers,
    "clusterer": clusterers,
    "dataset": datasets,
}


def registry_for(kind: str) -> Registry[Any]:
    """The registry of ``kind`` ("model", "explainer", "clusterer" or "dataset")."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise PluginError(f"unknown plugin kind {kind!r}; expected one of {', '.join(_BY_KIND)}") from None


def all_plugins() -> list[PluginInfo]:
    """Every plugin of every kind, loaded; failures included with their error."""
    return [info for reg in _BY_KIND.values() for info in reg.infos()]


def reset_all() -> None:
    """Forget all registries' contents (tests use this after changing ``XRAY_XAI_PLUGINS``)."""
    for reg in _BY_KIND.values():
        reg.reset()
