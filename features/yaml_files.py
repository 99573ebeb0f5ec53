"""Spec and rule files: one YAML reader, one base model, one error message shape.

Every file format Tailor reads (serving rules, persona rules, micro-segment rules, the train,
tune and benchmark specs, the segment job) is a pydantic model deriving from :class:`FileModel`
(unknown keys forbidden), read by :func:`read_yaml` and validated by :func:`validate`, which
turns the first problem into one line of the shape::

    <file>: <entry> 'name', key 'path.to[0].key', value <value>: <why>; allowed: <what>

(``<entry> 'name', `` only for a problem inside a named entry such as a rule.) A missing file and
broken YAML are reported the same way, naming the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

_NO_VALUE = object()


class Invalid(ValueError):
    """Raised by a validator to point below the field it checks: ``key`` (a dotted path, or a
    tuple of keys and list indices, relative to the model being validated) and the offending
    ``value``; ``why`` says what is wrong."""

    def __init__(self, why: str, key: str | tuple | None = None, value: Any = _NO_VALUE) -> None:
        super().__init__(why)
        self.why, self.key, self.value = why, key, value


#: The pydantic configuration of every spec and rule file: unknown keys are errors. (Models are
#: frozen through :class:`FileModel`, dataclasses through ``@dataclass(frozen=True, ...)``.)
FILE_CONFIG = ConfigDict(extra="forbid")


def reject_bool_numbers(cls: type, value: Any, info: Any) -> Any:
    """A ``field_validator("*", mode="before")``: a YAML boolean is not a number (pydantic's lax
    mode would read ``k: true`` as 1)."""
    fields = _fields(cls)
    if isinstance(value, bool) and info.field_name in fields:
        wanted = _plain_types(fields[info.field_name])
        if wanted and bool not in wanted and wanted & {int, float}:
            raise ValueError(f"expected {'an integer' if int in wanted else 'a number'}")
    return value


class FileModel(BaseModel):
    """Base of every spec and rule file model: frozen, unknown keys are errors, and a YAML
    boolean is not a number. (A spec that is also a dataclass is a pydantic dataclass with
    ``config=FILE_CONFIG`` and the same :func:`reject_bool_numbers` validator.)"""

    model_config = ConfigDict(**FILE_CONFIG, frozen=True)
    _no_bool_numbers = field_validator("*", mode="before")(reject_bool_numbers)


#: A non-empty text, and a count (an integer >= 0), as the rule files write them.
Text = Annotated[str, StringConstraints(min_length=1)]
Count = Annotated[int, Field(ge=0)]


class Bounds(FileModel):
    """``{min: n, max: n}`` on a count, at least one bound, min not above max (absent: no bound;
    an explicit null is refused)."""

    min: Count = None  # type: ignore[assignment]
    max: Count = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not self.model_fields_set:
            raise Invalid("expected {min: n, max: n} with at least one bound")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise Invalid(f"min {self.min} is above max {self.max}")
        return self


R = typing.TypeVar("R")


def unique_names(
    rules: tuple[R, ...], why: str = "the name is used by an earlier rule"
) -> tuple[R, ...]:
    """``rules`` unchanged, or `Invalid` at the first rule whose ``name`` an earlier one has
    (for a list validator: ``field_validator("rules")(unique_names)``)."""
    for i, rule in enumerate(rules):
        earlier = [j for j, other in enumerate(rules[:i]) if other.name == rule.name]
        if earlier:
            raise Invalid(f"{why} (#{earlier[0] + 1})", (i, "name"), rule.name)
    return rules


def _fields(tp: Any) -> dict[str, Any]:
    """Field name -> annotation of a pydantic model, pydantic dataclass or plain dataclass
    (empty for anything else)."""
    pydantic_fields = getattr(tp, "__pydantic_fields__", None)
    if isinstance(tp, type) and pydantic_fields is not None:
        return {name: f.annotation for name, f in pydantic_fields.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {f.name: hints[f.name] for f in dataclasses.fields(tp) if f.init}
    return {}


def _plain_types(annotation: Any) -> set:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {arg for arg in typing.get_args(annotation) if isinstance(arg, type)}
    return {annotation} if isinstance(annotation, type) else set()


def read_yaml(
    path: str | Path | None,
    error: type[Exception],
    what: str,
    *,
    package: str | None = None,
    name: str | None = None,
) -> tuple[Any, str]:
    """``(document, origin)``: the YAML at ``path``, or the packaged ``package/name`` when
    ``path`` is None; ``error`` is raised for a missing file (``"<what> not found: <path>"``) or
    invalid YAML (naming the file). An empty file reads as None."""
    import yaml

    if path is None:
        if package is None or name is None:
            raise error(f"no {what} given")
        text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
        origin = f"{package}/{name}"
    else:
        path = Path(path)
        if not path.is_file():
            raise error(f"{what} not found: {path}")
        try:
            text, origin = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"{path}: cannot read the {what}: {exc}") from None
    try:
        return yaml.safe_load(text), origin
    except yaml.YAMLError as exc:
        # One line: where and what the parser found, not its multi-line excerpt of the file.
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise error(f"{origin}: not valid YAML{line}: {problem}") from None


M = typing.TypeVar("M")


def validate(
    model: type[M],
    data: Any,
    error: type[Exception],
    origin: str,
    *,
    entries: str | None = None,
    entry: str = "rule",
    context: dict[str, Any] | None = None,
    flat: tuple[str, ...] = (),
) -> M:
    """``data`` validated as ``model``, or ``error`` with the message of :func:`explain`.

    ``entries``: the top-level key holding a list of named entries (``rules``), each called
    ``entry`` in messages and named by its ``name`` key (else its number, ``#1``).
    ``context`` reaches the validators as ``info.context``. ``model`` is a pydantic model or a
    (pydantic) dataclass. ``flat``: nested sections whose keys the file writes at the top level
    (messages name those keys without the section)."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data, context=context)
        return TypeAdapter(model).validate_python(data, context=context)
    except ValidationError as exc:
        message = explain(exc, model, data, origin, entries=entries, entry=entry, flat=flat)
        raise error(message) from None


def explain(
    exc: ValidationError,
    model: type,
    data: Any,
    origin: str,
    *,
    entries: str | None = None,
    entry: str = "rule",
    flat: tuple[str, ...] = (),
) -> str:
    """One line for the first problem in ``exc`` (see the module docstring for the shape),
    with ``(and N more problems)`` when there are others."""
    problems = exc.errors(include_url=False)
    # A list or mapping whose items failed is reported through the items, not again as itself;
    # an unknown key comes first (a misspelt key usually also leaves a required one missing).
    locs = [tuple(p["loc"]) for p in problems]
    problems = [
        p
        for p in problems
        if not any(o[: len(p["loc"])] == p["loc"] and o != p["loc"] for o in locs)
    ] or problems
    problems.sort(key=lambda p: p["type"] not in _UNKNOWN)
    first = problems[0]
    loc, value = list(first["loc"]), first.get("input", _NO_VALUE)
    why = _why(first, model, loc, flat)
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, Invalid):
        if cause.key:
            loc += cause.key.split(".") if isinstance(cause.key, str) else list(cause.key)
            value = cause.value if cause.value is not _NO_VALUE else _lookup(data, loc)
        elif cause.value is not _NO_VALUE:
            value = cause.value
    if loc and loc[-1] == "[key]":  # a mapping key that is not allowed: the key is the value
        loc = loc[:-2]
    if first["type"] == "missing":
        value = _NO_VALUE
    whole_section = bool(loc) and loc[0] in flat and len(loc) == 1
    if loc and loc[0] in flat:
        loc = loc[1:]
    where = ""
    if entries and len(loc) >= 2 and loc[0] == entries and isinstance(loc[1], int):
        where = f"{entry} {_entry_name(data, entries, loc[1])}, "
        loc = loc[2:]
    parts = [f"{origin}: {where}"]
    if whole_section:  # a section's own cross-key check: its message names the keys
        parts.append(why)
    else:
        parts.append(f"key {_path(loc)!r}" if loc else "the top level")
        if value is not _NO_VALUE:
            shown = repr(value)
            parts.append(f", value {shown if len(shown) <= 200 else shown[:197] + '...'}")
        parts.append(f": {why}")
    if len(problems) > 1:
        parts.append(f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})")
    return "".join(parts)


def _lookup(data: Any, loc: list) -> Any:
    """The value at ``loc`` in the raw document, or ``_NO_VALUE``."""
    for part in loc:
        try:
            data = data[part]
        except (IndexError, KeyError, TypeError):
            return _NO_VALUE
    return data


def _entry_name(data: Any, entries: str, index: int) -> str:
    try:
        name = data[entries][index].get("name")
    except (AttributeError, IndexError, KeyError, TypeError):
        name = None
    return repr(name) if isinstance(name, str) and name.strip() else f"#{index + 1}"


def _path(loc: list) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
_WHY = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_parsing": "expected a boolean (true/false)",
    "bool_type": "expected a boolean (true/false)",
    "string_type": "expected text",
    "string_too_short": "expected non-empty text",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}


def _why(problem: dict, model: type, loc: list, flat: tuple[str, ...] = ()) -> str:
    kind, ctx = problem["type"], problem.get("ctx") or {}
    if kind in _UNKNOWN:
        return f"unknown key; allowed: {_allowed_keys(model, loc[:-1], flat)}"
    if kind in ("model_type", "model_attributes_type", "dataclass_type"):
        return f"expected a mapping; allowed keys: {_allowed_keys(model, loc)}"
    if kind == "missing":
        return f"missing (required); allowed: {_allowed_keys(model, loc[:-1])}"
    if kind == "literal_error" or kind == "enum":
        return f"not one of {ctx.get('expected')}"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return "expected a non-empty list" if least == 1 else f"expected {least}+ items"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} items"
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        noun = "an integer" if _is_int(_annotation_at(model, loc)) else "a number"
        return f"expected {noun} {bounds[kind]} {limit}"
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        return cause.why if isinstance(cause, Invalid) else str(cause)
    return _WHY.get(kind, problem["msg"])


def _is_int(annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _is_int(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_int(arg) for arg in args)
    return annotation is int


def _annotation_at(model: type, loc: list) -> Any:
    """The type annotation at ``loc`` inside ``model`` (None when it cannot be followed)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current, part)
        if current is None:
            return None
    return current


def _unwrap(annotation: Any, part: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unwrap(args[0], part)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _unwrap(arg, part)
            if found is not None:
                return found
        return None
    fields = _fields(annotation)
    if fields:
        return fields.get(part) if isinstance(part, str) else None
    if origin in (list, tuple) and isinstance(part, int):
        return args[0] if args else None
    if origin is dict and isinstance(part, str):
        return args[1] if args else None
    return None


def _keys_at(model: type, loc: list) -> dict[str, Any]:
    annotation = _annotation_at(model, loc)
    while annotation is not None and not _fields(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if args else None
    return _fields(annotation) if annotation is not None else {}


def section_keys(model: type, section: str) -> dict[str, Any]:
    """The keys (with their types) of ``model``'s nested section ``section``."""
    return _keys_at(model, [section])


def _allowed_keys(model: type, loc: list, flat: tuple[str, ...] = ()) -> str:
    found = _keys_at(model, loc)
    if not loc and flat:
        found = {
            key: hint
            for name, outer in found.items()
            for key, hint in (section_keys(model, name) if name in flat else {name: outer}).items()
        }
    if not found:
        return "(see the file's documentation)"
    return ", ".join(f"{key}: {type_name(hint)}" for key, hint in found.items())


def type_name(annotation: Any) -> str:
    """A short readable name for a field type: ``int``, ``'a' | 'b'``, ``list``, ``mapping``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(arg) for arg in args))
    if annotation is type(None):
        return "None"
    if origin in (list, tuple) or annotation in (list, tuple):
        return "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if _fields(annotation):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))
