"""lift-sys prompt templates: function requests in six categories, their slot pools and their exact IRs.

A template has phrasings (format strings over its slots; phrasing 0 is canonical, the others are
meaning-preserving rewordings over the same slots) and an IR template. Substituting one set of slots
into both gives a prompt and the IR that answers it exactly, which is what the template oracle relies on.

    lib = load_templates()                                   # data/lift_sys/templates.yaml
    slots = lib.sample_slots("cf_sign_label", random.Random(0))
    lib.render_prompt("cf_sign_label", slots, phrasing=1), lib.render_ir("cf_sign_label", slots)

A slot pool is a list of scalars (one slot) or of mappings (a bundle of slots drawn together, e.g. three
matching labels, or a type hint and its wording). A slot value may refer to scalar slots as ``{name}``.
Every template is checked when loaded: each phrasing names every pool, and the IR rendered with each
pool value passes ``validate_ir``; a failure names the file, template and field.
"""

from __future__ import annotations

import copy
import math
import random
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from tasks.lift_sys.lift_ir import validate_ir

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "data" / "lift_sys" / "templates.yaml"
CATEGORIES = ("control_flow", "list_operations", "string_manipulation", "type_operations", "mathematical", "edge_cases")
Category = Literal["control_flow", "list_operations", "string_manipulation", "type_operations", "mathematical", "edge_cases"]
Complexity = Literal["simple", "medium", "complex"]
Scalar = StrictStr | StrictInt | StrictFloat  # strict: a YAML `yes`/`no` read as a bool is an error, not a 1
_UNION_TAGS = {"str", "int", "float", "dict[str,union[str,int,float]]"}  # pydantic's names for union branches in error paths


class TemplateError(ValueError):
    """A template file or template is malformed; the message names the file, template and field."""


class Template(BaseModel):
    """One request template: its phrasings, slot pools and IR template."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    category: Category
    complexity: Complexity
    phrasings: list[str] = Field(min_length=2, max_length=4)
    slots: dict[str, list[Scalar | dict[str, Scalar]]]
    ir: dict[str, Any]

    def pools(self) -> dict[str, list[str]]:
        """Slot names drawn by each pool: a scalar pool draws itself, a bundle draws its keys."""
        return {pool: list(values[0]) if isinstance(values[0], dict) else [pool] for pool, values in self.slots.items()}

    def combinations(self) -> int:
        """How many distinct slot assignments (and so distinct canonical prompts) the pools allow."""
        return math.prod(len(values) for values in self.slots.values())

    def slots_at(self, index: int) -> dict[str, Scalar]:
        """The ``index``-th slot assignment (mixed-radix over the pools, in file order)."""
        if not 0 <= index < self.combinations():
            raise IndexError(f"template '{self.id}': slot assignment {index} out of range 0..{self.combinations() - 1}")
        out: dict[str, Scalar] = {}
        for pool, values in self.slots.items():
            index, pick = divmod(index, len(values))
            value = values[pick]
            out.update(value if isinstance(value, dict) else {pool: value})
        return out


class TemplateLibrary:
    """The loaded templates, keyed by id, with rendering and slot sampling."""

    def __init__(self, templates: dict[str, Template], path: Path | None = None):
        self.templates, self.path = templates, path

    def __repr__(self) -> str:
        return f"TemplateLibrary({len(self.templates)} templates from {self.path})"

    def template(self, template_id: str) -> Template:
        try:
            return self.templates[template_id]
        except KeyError:
            raise KeyError(f"unknown template '{template_id}'; known: {', '.join(sorted(self.templates))}") from None

    def by_category(self) -> dict[str, list[Template]]:
        """Templates per category, in file order."""
        return {c: [t for t in self.templates.values() if t.category == c] for c in CATEGORIES}

    def sample_slots(self, template_id: str, rng: random.Random) -> dict[str, Scalar]:
        """One random slot assignment of the template."""
        tpl = self.template(template_id)
        return tpl.slots_at(rng.randrange(tpl.combinations()))

    def render_prompt(self, template_id: str, slots: dict[str, Any], phrasing: int = 0) -> str:
        """The request text of ``phrasing`` (0 = canonical) with ``slots`` filled in."""
        tpl = self.template(template_id)
        if not 0 <= phrasing < len(tpl.phrasings):
            raise IndexError(f"template '{template_id}' has phrasings 0..{len(tpl.phrasings) - 1}, not {phrasing}")
        return _fill(tpl.phrasings[phrasing], _resolved(tpl, slots), f"template '{template_id}': phrasings.{phrasing}")

    def render_ir(self, template_id: str, slots: dict[str, Any]) -> dict:
        """The exact IR (a dict that passes ``validate_ir``) for the prompt rendered with ``slots``."""
        tpl = self.template(template_id)
        values = _resolved(tpl, slots)
        return _fill_tree(copy.deepcopy(tpl.ir), values, f"template '{template_id}': ir")


def load_templates(path: Path | None = None) -> TemplateLibrary:
    """Read and check a templates YAML (default: the shipped ``data/lift_sys/templates.yaml``)."""
    path = Path(path) if path else DEFAULT_TEMPLATES
    if not path.exists():
        raise TemplateError(f"{path}: templates file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TemplateError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("templates"), list):
        raise TemplateError(f"{path}: expected a mapping with a 'templates' list")
    templates: dict[str, Template] = {}
    for i, raw in enumerate(doc["templates"]):
        name = raw.get("id", f"#{i}") if isinstance(raw, dict) else f"#{i}"
        try:
            tpl = Template.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"] if p not in _UNION_TAGS)
            raise TemplateError(f"{path}: template '{name}': field '{field}': {err['msg']} (got {err.get('input')!r}; "
                                "quote YAML words such as null, yes, True)") from None
        if tpl.id in templates:
            raise TemplateError(f"{path}: template '{tpl.id}' is defined twice")
        try:
            _check(tpl)
        except TemplateError as e:
            raise TemplateError(f"{path}: {e}") from None
        templates[tpl.id] = tpl
    missing = [c for c in CATEGORIES if not any(t.category == c for t in templates.values())]
    if missing:
        raise TemplateError(f"{path}: no templates for categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
    return TemplateLibrary(templates, path)


# ---- checks and substitution -------------------------------------------------------------------

def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _strings(node: Any, where: str):
    """(field path, string) for every string in an IR template."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}.{i}")


def _check(tpl: Template) -> None:
    """Structural checks that pydantic cannot express; raises TemplateError naming template and field."""
    where = f"template '{tpl.id}'"
    pools = tpl.pools()
    names: dict[str, str] = {}
    for pool, values in tpl.slots.items():
        if not values:
            raise TemplateError(f"{where}: slots.{pool}: empty pool")
        kinds = {type(v) is dict for v in values}
        if len(kinds) > 1:
            raise TemplateError(f"{where}: slots.{pool}: mixes scalars and mappings; use one kind per pool")
        if isinstance(values[0], dict) and any(set(v) != set(values[0]) for v in values):
            raise TemplateError(f"{where}: slots.{pool}: every mapping of a bundle needs the keys {sorted(values[0])}")
        if len({repr(v) for v in values}) != len(values):
            raise TemplateError(f"{where}: slots.{pool}: repeated value")
        for name in pools[pool]:
            if name in names:
                raise TemplateError(f"{where}: slots.{pool}: slot '{name}' is also drawn by pool '{names[name]}'")
            names[name] = pool
    scalar_pools = {p for p, v in tpl.slots.items() if not isinstance(v[0], dict)}
    for pool, values in tpl.slots.items():
        for value in values:
            for v in value.values() if isinstance(value, dict) else [value]:
                refs = _fields(v) if isinstance(v, str) else set()
                if refs - scalar_pools:
                    raise TemplateError(f"{where}: slots.{pool}: value {v!r} refers to {sorted(refs - scalar_pools)}; "
                                        f"a slot value may only refer to scalar slots {sorted(scalar_pools)}")
    for k, text in enumerate(tpl.phrasings):
        used = _fields(text)
        if used - names.keys():
            raise TemplateError(f"{where}: phrasings.{k}: unknown slot(s) {sorted(used - names.keys())}")
        for pool, keys in pools.items():
            shown = [key for key in keys if key in used]
            if not shown:
                raise TemplateError(f"{where}: phrasings.{k}: does not mention pool '{pool}' ({', '.join(keys)}), "
                                    "so prompts would not determine the IR")
            if isinstance(tpl.slots[pool][0], dict) and \
                    len({tuple(v[key] for key in shown) for v in tpl.slots[pool]}) != len(tpl.slots[pool]):
                raise TemplateError(f"{where}: phrasings.{k}: slots {shown} do not tell the entries of bundle "
                                    f"'{pool}' apart; mention a key whose values differ")
    for field, text in _strings(tpl.ir, "ir"):
        if _fields(text) - names.keys():
            raise TemplateError(f"{where}: {field}: unknown slot(s) {sorted(_fields(text) - names.keys())}")
    lib = TemplateLibrary({tpl.id: tpl})
    # Each pool value appears in at least one rendering, so a bad function name or type hint is caught here.
    for i in range(max(len(v) for v in tpl.slots.values())):
        slots: dict[str, Scalar] = {}
        for pool, values in tpl.slots.items():
            value = values[i % len(values)]
            slots.update(value if isinstance(value, dict) else {pool: value})
        for k in range(len(tpl.phrasings)):
            lib.render_prompt(tpl.id, slots, k)
        _, errors = validate_ir(lib.render_ir(tpl.id, slots))
        if errors:
            raise TemplateError(f"{where}: ir with slots {slots}: {errors[0]}")


def _resolved(tpl: Template, slots: dict[str, Any]) -> dict[str, Any]:
    """``slots`` with slot values that refer to other slots (``{name}``) filled in."""
    missing = [name for keys in tpl.pools().values() for name in keys if name not in slots]
    if missing:
        raise TemplateError(f"template '{tpl.id}': missing slot(s) {missing}")
    return {k: _fill(v, slots, f"template '{tpl.id}': slot '{k}'") if isinstance(v, str) else v for k, v in slots.items()}


def _fill(text: str, values: dict[str, Any], where: str) -> str:
    try:
        return text.format_map(values)
    except (KeyError, ValueError, IndexError) as e:
        raise TemplateError(f"{where}: cannot fill {text!r}: {type(e).__name__}: {e}") from None


def _fill_tree(node: Any, values: dict[str, Any], where: str) -> Any:
    if isinstance(node, str):
        return _fill(node, values, where)
    if isinstance(node, dict):
        return {k: _fill_tree(v, values, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_fill_tree(v, values, f"{where}.{i}") for i, v in enumerate(node)]
    return node
