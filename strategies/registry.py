"""Find strategy classes by name or reference and build fresh, validated instances.

A reference is a built-in name (``sma_cross``), ``package.module:Class`` or
``path/to/file.py:Class``. A CLI spec appends parameters after one more colon:
``sma_cross:fast=5,slow=20`` or ``path/to/my.py:MyStrat:fast=5``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from strategies.base import Params, Strategy, StrategyError
from strategies.bollinger import Bollinger
from strategies.ema_cross import EmaCross
from strategies.macd_cross import MacdCross
from strategies.rsi_revert import RsiRevert
from strategies.sma_cross import SmaCross

__all__ = ["absolute_ref", "builtins", "create", "describe", "describe_all",
           "load_strategy_class", "parse_spec"]

_BUILTINS: tuple[type[Strategy], ...] = (Bollinger, EmaCross, MacdCross, RsiRevert, SmaCross)
_REF_HELP = "a built-in name, 'package.module:Class' or 'path/to/file.py:Class'"
_IDENT = re.compile(r"[A-Za-z_]\w*\Z")
_FIELD_AT = re.compile(r"- at `\$\.(\w+)`")


def builtins() -> dict[str, type[Strategy]]:
    """Built-in strategy classes by name, sorted by name."""
    return {cls.name: cls for cls in sorted(_BUILTINS, key=lambda c: c.name)}


def load_strategy_class(ref: str) -> type[Strategy]:
    """Resolve a built-in name, ``package.module:Class`` or ``path/to/file.py:Class``."""
    ref = ref.strip()
    known = builtins()
    if ref in known:
        return known[ref]
    if ":" not in ref:
        hint = difflib.get_close_matches(ref, known, n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise StrategyError(
            f"unknown strategy {ref!r}{maybe}; built-in strategies: {', '.join(known)}; "
            f"or give {_REF_HELP}"
        )
    where, _, attr = ref.rpartition(":")
    if not where or not _IDENT.match(attr):
        raise StrategyError(f"malformed strategy reference {ref!r}; expected {_REF_HELP}")
    if where in known:
        raise StrategyError(
            f"malformed strategy spec {ref!r}: {where!r} is a built-in strategy; give its "
            f"parameters as {where}:key=value,key=value"
        )
    module = _load_file(where, ref) if _is_file(where) else _import_module(where, attr, ref)
    obj = getattr(module, attr, None)
    if obj is None:
        found = sorted(
            n
            for n, v in vars(module).items()
            if inspect.isclass(v) and issubclass(v, Strategy) and v is not Strategy
        )
        raise StrategyError(
            f"{where!r} has no attribute {attr!r}; strategy classes there: "
            f"{', '.join(found) or 'none'}"
        )
    return _check_class(obj, ref)


def _is_file(where: str) -> bool:
    """Whether the part before ``:Class`` of a reference names a file (else a module)."""
    return where.endswith(".py") or "/" in where or "\\" in where


def absolute_ref(ref: str, base: Path) -> str:
    """``ref`` with a file's path made absolute against ``base`` (``~`` expanded), so that it
    means the same file in any process; a built-in name or module reference is unchanged."""
    where, sep, attr = ref.strip().rpartition(":")
    if not sep or not where or not _is_file(where):
        return ref
    path = Path(where).expanduser()
    return f"{os.path.normpath(base / path)}:{attr}"


def create(name_or_ref: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """Build a NEW strategy instance, converting ``params`` strictly into its Params type."""
    cls = load_strategy_class(name_or_ref)
    label = cls.name
    values = dict(params or {})
    fields = {f.name for f in msgspec.structs.fields(cls.Params)}
    for key in values:
        if key not in fields:
            raise StrategyError(
                f"strategy {label!r} has no parameter {key!r}; valid parameters: {_param_list(cls)}"
            )
    try:
        typed = msgspec.convert(values, type=cls.Params)
    except msgspec.ValidationError as exc:
        match = _FIELD_AT.search(str(exc))
        what = f"parameter {match.group(1)!r}" if match else "parameters"
        reason = _FIELD_AT.sub("", str(exc)).strip()
        raise StrategyError(
            f"strategy {label!r}: bad value for {what}: {reason}; valid parameters: "
            f"{_param_list(cls)}"
        ) from None
    try:
        return cls(typed)
    except StrategyError:
        raise
    except Exception as exc:
        raise StrategyError(
            f"strategy {label!r} failed to initialise: {type(exc).__name__}: {exc}"
        ) from exc


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """Split a CLI spec like ``ref`` or ``ref:key=value,key=value`` into (ref, params).

    Values become int, else float, else bool (true/false), else str. The parameter group is
    the part after the last ':' and is recognised by its '='.
    """
    spec = text.strip()
    ref, sep, tail = spec.rpartition(":")
    if not sep or "=" not in tail:
        ref, tail = spec, ""
    ref = ref.strip()
    if not ref or ref.startswith(":") or ref.endswith(":"):
        raise StrategyError(f"malformed strategy spec {text!r}: expected 'name[:key=value,...]'")
    if "=" in ref:
        raise StrategyError(
            f"malformed strategy spec {text!r}: parameters go in one comma-separated group "
            "after the last ':', e.g. 'sma_cross:fast=5,slow=20'"
        )
    params: dict[str, Any] = {}
    if tail:
        for item in tail.split(","):
            key, eq, raw = (part.strip() for part in item.partition("="))
            if not eq or not _IDENT.match(key) or not raw:
                raise StrategyError(
                    f"malformed parameter {item.strip()!r} in strategy spec {text!r}: "
                    "expected key=value"
                )
            if key in params:
                raise StrategyError(f"parameter {key!r} given twice in strategy spec {text!r}")
            params[key] = _parse_value(raw)
    return ref, params


def describe(cls: type[Strategy]) -> list[tuple[str, str, Any]]:
    """(name, type name, default) of each parameter; required ones show msgspec.NODEFAULT."""
    rows: list[tuple[str, str, Any]] = []
    for field in msgspec.structs.fields(cls.Params):
        default = field.default
        if default is msgspec.NODEFAULT and field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        rows.append((field.name, _type_name(field.type), default))
    return rows


def describe_all() -> list[tuple[str, str, str]]:
    """(name, description, "param: type = default, ...") of each built-in, for listings."""
    return [(name, cls.description, _param_list(cls)) for name, cls in builtins().items()]


def _parse_value(raw: str) -> Any:
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    return raw


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _param_list(cls: type[Strategy]) -> str:
    rows = describe(cls)
    if not rows:
        return "none"
    return ", ".join(
        f"{n}: {t}" + ("" if d is msgspec.NODEFAULT else f" = {d!r}") for n, t, d in rows
    )


def _check_class(obj: object, ref: str) -> type[Strategy]:
    if not (inspect.isclass(obj) and issubclass(obj, Strategy)):
        raise StrategyError(f"{ref!r} is not a Strategy subclass (got {obj!r})")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise StrategyError(f"strategy {ref!r} is abstract; it must implement: {missing}")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise StrategyError(f"strategy {ref!r} must set a class attribute name = '...'")
    if not (inspect.isclass(obj.Params) and issubclass(obj.Params, Params)):
        raise StrategyError(
            f"strategy {name!r}: Params must subclass strategies.base.Params, got {obj.Params!r}"
        )
    return obj


def _import_module(module_name: str, attr: str, ref: str) -> types.ModuleType:
    """Import ``module_name`` for its ``attr``; a module whose source never names ``attr``
    is refused before it runs (``-s this:X`` must not execute an unrelated module)."""
    try:
        if not _may_define(module_name, attr):
            raise StrategyError(f"module {module_name!r} does not define {attr!r} (not imported)")
        return importlib.import_module(module_name)
    except StrategyError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise StrategyError(
                f"cannot import module {module_name!r} for strategy {ref!r}: not found"
            ) from exc
        raise StrategyError(f"error importing {module_name!r} for strategy {ref!r}: {exc}") from exc
    except Exception as exc:
        raise StrategyError(
            f"error importing {module_name!r} for strategy {ref!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _may_define(module_name: str, attr: str) -> bool:
    """False when the module's source is readable and names ``attr`` nowhere (nor star-imports
    anything); its parent packages are imported to find it, the module itself is not."""
    spec = importlib.util.find_spec(module_name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {module_name!r}", name=module_name)
    get_source = getattr(spec.loader, "get_source", None)
    try:
        source = get_source(module_name) if get_source is not None else None
    except (ImportError, OSError, UnicodeDecodeError):
        source = None
    if source is None:  # compiled or generated: only importing it can tell
        return True
    return re.search(rf"\b{re.escape(attr)}\b|\bimport\s+\*", source) is not None


def _load_file(where: str, ref: str) -> types.ModuleType:
    """Import a strategy file once per resolved path, under a unique private module name."""
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise StrategyError(f"strategy file {where!r} (from {ref!r}) does not exist")
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    mod_name = f"_multibot_user_{stem}_{digest}"
    cached = sys.modules.get(mod_name)
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(f"cannot load strategy file {str(path)!r} (from {ref!r})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[mod_name]
        if not isinstance(exc, Exception):
            raise
        raise StrategyError(
            f"error loading strategy file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return module
