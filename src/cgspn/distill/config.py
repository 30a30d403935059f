"""Configuration: the embedded default YAML, a user YAML on top, then ``--set key.path=value``.

Every key a user sets must exist in the default (``cgspn/configs/distill_default.yaml``), except
inside the free-form mappings :data:`FREE_FORM` (model kwargs). A misspelt key is a one-line
``ValueError`` naming the closest known key. The fully resolved config is written into every run.
"""

from __future__ import annotations

import copy
import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = ["load_config", "default_config", "apply_override", "parse_value", "dump_config", "FREE_FORM",
           "packaged_configs", "resolve_config_path"]

FREE_FORM = ("student.kwargs", "teacher.model_kwargs")


def _read_yaml_text(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{where}: invalid YAML{pos}: {getattr(e, 'problem', e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the top level must be a mapping")
    return data


def packaged_configs() -> list[str]:
    """Names of the configs shipped in ``cgspn/configs`` (``distill_*.yaml``)."""
    return sorted(p.name for p in resources.files("cgspn").joinpath("configs").iterdir() if p.name.endswith(".yaml"))


def default_config() -> dict[str, Any]:
    """The embedded default config (a fresh copy)."""
    text = resources.files("cgspn").joinpath("configs").joinpath("distill_default.yaml").read_text(encoding="utf-8")
    return _read_yaml_text(text, "distill_default.yaml")


def resolve_config_path(name: str | os.PathLike) -> Path | str:
    """A file path, or the name of a packaged config (``distill_h200`` / ``distill_h200.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    cand = str(name) if str(name).endswith(".yaml") else f"{name}.yaml"
    if cand in packaged_configs():
        return cand
    raise FileNotFoundError(f"config not found: {name} (packaged: {', '.join(packaged_configs())})")


def parse_value(text: str) -> Any:
    """YAML scalar/list parsing with '1e-4'-style floats accepted."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _is_free(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in FREE_FORM)


def _known_keys(cfg: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        p = f"{prefix}{k}"
        out.append(p)
        if isinstance(v, dict) and not _is_free(p):
            out.extend(_known_keys(v, p + "."))
    return out


def _unknown_full(path: str, root: Mapping[str, Any]) -> ValueError:
    close = difflib.get_close_matches(path, _known_keys(root), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown config key '{path}'{hint}")


def _merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str = "",
           root: Mapping[str, Any] | None = None) -> None:
    """Recursively merge ``update`` into ``base`` (``prefix``: dotted path of ``base``)."""
    root = base if root is None else root
    free = bool(prefix) and _is_free(prefix.rstrip("."))
    for k, v in update.items():
        path = f"{prefix}{k}"
        if free:
            base[k] = copy.deepcopy(v)
            continue
        if k not in base:
            raise _unknown_full(path, root)
        if isinstance(base[k], dict) and not _is_free(path):
            if not isinstance(v, dict):
                raise ValueError(f"config key '{path}' is a section; got {type(v).__name__}")
            _merge(base[k], v, path + ".", root)
        else:
            base[k] = copy.deepcopy(v)


def apply_override(cfg: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to ``cfg`` in place."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got '{assignment}'")
    path, _, raw = assignment.partition("=")
    path = path.strip()
    keys = path.split(".")
    node: Any = cfg
    for i, k in enumerate(keys[:-1]):
        sub = ".".join(keys[: i + 1])
        if not isinstance(node, dict) or k not in node:
            if isinstance(node, dict) and _is_free(".".join(keys[:i])):
                node = node.setdefault(k, {})
                continue
            raise _unknown_full(path, cfg)
        node = node[k]
        if not isinstance(node, dict):
            raise ValueError(f"config key '{sub}' is not a section")
    last = keys[-1]
    parent = ".".join(keys[:-1])
    if not isinstance(node, dict) or (last not in node and not _is_free(parent)):
        raise _unknown_full(path, cfg)
    if isinstance(node.get(last), dict) and not _is_free(path):
        value = parse_value(raw)
        if not isinstance(value, dict):
            raise ValueError(f"config key '{path}' is a section; set its keys (e.g. {path}.<key>=...)")
        _merge(node[last], value, path + ".", cfg)
        return
    node[last] = parse_value(raw)


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """default <- YAML file ``path`` (a file or a packaged config name) <- ``overrides``."""
    cfg = default_config()
    if path is not None:
        where = resolve_config_path(path)
        if isinstance(where, Path):
            text = where.read_text(encoding="utf-8")
        else:
            text = resources.files("cgspn").joinpath("configs").joinpath(where).read_text(encoding="utf-8")
        user = _read_yaml_text(text, str(path))
        try:
            _merge(cfg, user)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    for ov in overrides:
        apply_override(cfg, ov)
    return cfg


def dump_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(cfg), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
