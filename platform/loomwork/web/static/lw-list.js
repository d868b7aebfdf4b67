const hasOwn = (obj, key) => obj != null && Object.prototype.hasOwnProperty.call(obj, key);

/**
 * List pages: the filter builder and bulk selection.
 *
 * The list page (list.html) works without JavaScript: the filter travels in the URL
 * as JSON (`?filter=`) or in the compact `field__op=value` form, and the bulk form
 * posts the ticked rows. This module turns the filter AST into editable rows and
 * back, shows the bulk bar with a count while rows are ticked, and gives the bulk
 * update the value control of the chosen field. It activates on `.lw-list` with the
 * page data in `<script type="application/json" id="lw-list-data">`:
 *
 *   {"object": "deal", "fields": {name: {label, kind, ops, choices?, lookup?: {object, title_field}}},
 *    "op_labels": {"eq": "is", ...}, "filter": <AST or null>,
 *    "rules": {"operators": {name: {operand, nullable, text}}, "max_conditions", ...},
 *    "titles": {field: {id: title}}}
 *
 * `rules` is the filter AST's one definition (loomwork.metadata.filters), served by the
 * page: which operand each operator takes and the caps, so nothing here restates them.
 *
 * A lookup field with `lookup` (its target is readable) takes its values by searching
 * the target as you type — the forms' LookupBox over `GET /api/v1/data/<object>?search=`
 * — and shows titles (from `titles` for the filter the page opened with); the AST still
 * holds record ids. Without `lookup` the value is a record id.
 *
 * The builder edits a flat AST: one condition, or {and|or: [conditions]}. Anything
 * else (not, nesting, unknown fields or operators) is left alone with a note until
 * the user edits the builder, which then replaces it. The row controls have no
 * `name`, so only the JSON in the hidden `filter` input reaches the URL (no field
 * of the page can be mistaken for a compact condition).
 */
import { LookupBox } from "./lw-form.js";
import { _ } from "./lw-ui.js";

/** The filter rules the page serves; until then, no operator is known. */
let RULES = { operators: {}, max_conditions: 0 };
/** Titles of the records the page's filter names: {field: {id: title}}. */
let TITLES = {};
let lookupSeq = 0;
/** What operator `op` takes: "value", "list", "range" or "flag" (see the rules). */
const operand = (op) => (hasOwn(RULES.operators, op) ? RULES.operators[op].operand : null);
/** Operators a new row starts with, in order of preference. */
const DEFAULT_OPS = ["eq", "icontains", "contains"];
const VARIABLE_KINDS = new Set(["date", "datetime", "time", "integer", "number"]);


function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

function option(value, label, selected = false) {
  const o = el("option", { value, text: label });
  o.selected = selected;
  return o;
}

/**
 * How values of a field's `kind` are edited. The kind is the built-in field type whose
 * values the field's are like (FieldType.kind: a plugin's type built on text is "text").
 */
export function controlKind(kind) {
  switch (kind) {
    case "choice":
    case "multi_choice":
      return "choice";
    case "boolean":
    case "date":
    case "datetime":
    case "time":
    case "number":
      return kind;
    case "integer":
    case "lookup":
      return "integer";
    case "decimal":
    case "currency":
    case "percent":
      return "decimal";
    default:
      return "text";
  }
}

// -- values of one kind -------------------------------------------------------------

/** A UTC datetime as a datetime-local value ("YYYY-MM-DDTHH:MM:SS"). */
function localDatetime(value) {
  if (typeof value !== "string") return "";
  if (/(Z|[+-]\d\d:?\d\d)$/.test(value.slice(10))) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? "" : d.toISOString().slice(0, 19);
  }
  return value.slice(0, 19);
}

/** A datetime-local value as UTC text: seconds kept when given. */
function utcDatetime(text) {
  return text.length === 16 ? `${text}:00Z` : `${text.slice(0, 19)}Z`;
}

/** Text typed for a value of `kind` as the JSON the query service takes. */
function parseScalar(kind, text) {
  if (kind === "integer") return /^-?\d+$/.test(text.trim()) ? Number(text.trim()) : text.trim();
  if (kind === "number") {
    const n = Number(text.trim());
    return text.trim() !== "" && Number.isFinite(n) ? n : text.trim();
  }
  if (kind === "decimal") return text.trim();
  return text;
}

/**
 * One value control: `{node, read}`, where `read()` gives the JSON value or
 * undefined when nothing is entered.
 */
function scalarEditor(kind, field, value, label) {
  if (typeof value === "string" && value.startsWith("$") && VARIABLE_KINDS.has(kind)) kind = "text"; // $today...
  const shown = value === undefined || value === null ? "" : value;
  if (kind === "choice") {
    const choices = field.choices || [];
    const select = el("select", { "aria-label": label }, [option("", _("— choose —"))]);
    for (const c of choices) select.append(option(c.value, c.label, c.value === shown));
    if (shown !== "" && !choices.some((c) => c.value === shown)) select.append(option(shown, String(shown), true));
    return { node: select, read: () => (select.value === "" ? undefined : select.value) };
  }
  if (kind === "boolean") {
    const select = el("select", { "aria-label": label },
      [option("true", _("yes"), shown !== false), option("false", _("no"), shown === false)]);
    return { node: select, read: () => select.value === "true" };
  }
  const attrs = { "aria-label": label };
  if (kind === "date") Object.assign(attrs, { type: "date" });
  else if (kind === "datetime") Object.assign(attrs, { type: "datetime-local", step: "1" });
  else if (kind === "time") Object.assign(attrs, { type: "time" });
  else if (kind === "integer") Object.assign(attrs, { type: "text", inputmode: "numeric" });
  else if (kind === "number" || kind === "decimal") Object.assign(attrs, { type: "text", inputmode: "decimal" });
  else Object.assign(attrs, { type: "text" });
  const input = el("input", attrs);
  input.value = kind === "datetime" ? localDatetime(shown) : String(shown);
  const read = () => {
    const text = input.value;
    if (text.trim() === "") return undefined;
    return kind === "datetime" ? utcDatetime(text) : parseScalar(kind, text);
  };
  return { node: input, read };
}

/** A control for a list of values: a multi-select of choices, or comma-separated text. */
function listEditor(kind, field, values) {
  const chosen = Array.isArray(values) ? values : [];
  if (kind === "choice" || kind === "boolean") {
    const choices = kind === "boolean"
      ? [{ value: "true", label: _("yes") }, { value: "false", label: _("no") }]
      : field.choices || [];
    const wanted = chosen.map((v) => (typeof v === "boolean" ? String(v) : v));
    const select = el("select", { multiple: true, size: Math.min(Math.max(choices.length, 2), 5), "aria-label": _("Values") });
    for (const c of choices) select.append(option(c.value, c.label, wanted.includes(c.value)));
    for (const v of wanted) if (!choices.some((c) => c.value === v)) select.append(option(v, String(v), true));
    const read = () => {
      const picked = [...select.selectedOptions].map((o) => (kind === "boolean" ? o.value === "true" : o.value));
      return picked.length ? picked : undefined;
    };
    return { node: select, read };
  }
  const input = el("input", { type: "text", "aria-label": _("Values, separated by commas") });
  input.value = chosen.map((v) => (v === null ? "null" : String(v))).join(", ");
  const read = () => {
    const parts = input.value.split(",").map((s) => s.trim()).filter((s) => s !== "");
    return parts.length ? parts.map((p) => (p === "null" ? null : parseScalar(kind, p))) : undefined;
  };
  return { node: input, read };
}

/** A record id as the API takes it (the compact form gives text), or undefined. */
function recordId(value) {
  const n = typeof value === "string" && /^\d{1,18}$/.test(value) ? Number(value) : value;
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** What a chosen record shows: its title when the page knows it, else `#id`. */
function titleOf(name, id) {
  const known = TITLES[name] && TITLES[name][String(id)];
  return known === undefined ? `#${id}` : known;
}

/**
 * A search-as-you-type picker of one record of the lookup's target:
 * `{node, read, box, hidden}`; `read()` gives the chosen id or undefined.
 */
function lookupPicker(name, field, value, label) {
  lookupSeq += 1;
  const id = `lw-filter-lookup-${lookupSeq}`;
  const chosen = recordId(value);
  const hidden = el("input", { type: "hidden" });
  hidden.value = chosen === undefined ? "" : String(chosen);
  const text = el("input", {
    type: "text", id, role: "combobox", "aria-autocomplete": "list", "aria-expanded": "false",
    "aria-controls": `${id}-list`, autocomplete: "off", "aria-label": label, placeholder: _("Type to search…"),
  });
  text.value = chosen === undefined ? "" : titleOf(name, chosen);
  const list = el("ul", { id: `${id}-list`, role: "listbox", class: "lw-listbox", hidden: true });
  const node = el("div", { class: "lw-lookup", "data-object": field.lookup.object,
    "data-title-field": field.lookup.title_field }, [hidden, text, list]);
  const box = new LookupBox(node);
  const read = () => recordId(hidden.value);
  hidden.addEventListener("change", () => {
    // Remember the title, so the value keeps it when the row's operator changes.
    const rid = read();
    if (rid !== undefined) (TITLES[name] ||= {})[String(rid)] = text.value;
  });
  return { node, box, hidden, read };
}

/** Several records of the lookup's target: chosen ones as removable tokens, a picker to add. */
function lookupListEditor(name, field, values) {
  const chosen = new Map();
  for (const v of Array.isArray(values) ? values : []) {
    const rid = recordId(v);
    if (rid !== undefined) chosen.set(rid, titleOf(name, rid));
  }
  const tokens = el("span", { class: "lw-tokens" });
  const picker = lookupPicker(name, field, undefined, _("Add a record"));
  const render = () => {
    tokens.replaceChildren(...[...chosen].map(([rid, title]) => {
      const remove = el("button", { type: "button", "aria-label": _("Remove %(name)s", { name: title }), text: "×" });
      remove.addEventListener("click", () => {
        chosen.delete(rid);
        render();
        picker.node.dispatchEvent(new Event("change", { bubbles: true }));
        picker.box.text.focus();
      });
      return el("span", { class: "lw-token" }, [el("span", { text: title }), remove]);
    }));
  };
  picker.hidden.addEventListener("change", () => {
    const rid = picker.read();
    if (rid === undefined) return;
    chosen.set(rid, picker.box.text.value);
    picker.hidden.value = "";
    picker.box.setTitle("");
    render();
  });
  render();
  picker.node.prepend(tokens);
  return { node: picker.node, read: () => (chosen.size ? [...chosen.keys()] : undefined) };
}

/** The value control of a condition on field `name` with `op`. */
function valueEditor(name, field, op, value) {
  const kind = controlKind(field.kind);
  if (operand(op) === "flag") {
    const select = el("select", { "aria-label": _("Value") },
      [option("true", _("yes"), value !== false), option("false", _("no"), value === false)]);
    return { node: select, read: () => select.value === "true" };
  }
  if (field.lookup && operand(op) === "list") return lookupListEditor(name, field, value);
  if (field.lookup && operand(op) === "value") return lookupPicker(name, field, value, _("Value"));
  if (operand(op) === "list") return listEditor(kind, field, value);
  if (operand(op) === "range") {
    const [lo, hi] = Array.isArray(value) ? value : [];
    const a = scalarEditor(kind === "choice" ? "text" : kind, field, lo, _("From"));
    const b = scalarEditor(kind === "choice" ? "text" : kind, field, hi, _("To"));
    const node = el("span", { class: "lw-filter-range" }, [a.node, el("span", { "aria-hidden": "true", text: "–" }), b.node]);
    const read = () => {
      const x = a.read();
      const y = b.read();
      return x === undefined || y === undefined ? undefined : [x, y];
    };
    return { node, read };
  }
  return scalarEditor(kind, field, value, _("Value"));
}

/** A value entered for one operator, carried over to another. */
function carryValue(value, fromOp, toOp) {
  if (value === undefined || operand(fromOp) === "flag" || operand(toOp) === "flag") return undefined;
  const list = Array.isArray(value) ? value : [value];
  if (operand(toOp) === "list") return list;
  if (operand(toOp) === "range") return [list[0], list[1]];
  return list[0];
}

// -- the filter AST ------------------------------------------------------------------

function isCondition(node) {
  if (!node || typeof node !== "object" || Array.isArray(node)) return false;
  const keys = Object.keys(node).sort().join(",");
  return keys === "field,op,value";
}

/** A condition the builder can show, normalised (eq/ne null become is_null), or null. */
function editable(cond, fields) {
  if (!isCondition(cond) || !hasOwn(fields, cond.field)) return null;
  const field = fields[cond.field];
  let { op, value } = cond;
  if ((op === "eq" || op === "ne") && value === null && field.ops.includes("is_null")) {
    value = op === "eq";
    op = "is_null";
  }
  const kind = operand(op);
  if (kind === null || !field.ops.includes(op)) return null;
  if (kind === "flag" && typeof value !== "boolean") return null;
  if (kind === "list" && !Array.isArray(value)) return null;
  if (kind === "range" && !(Array.isArray(value) && value.length === 2)) return null;
  if (kind === "value" && value !== null && typeof value === "object") return null;
  return { field: cond.field, op, value };
}

/**
 * Read a filter AST for the builder.
 *
 * @returns {{join: "and"|"or", conditions: object[], foreign: boolean}} `foreign` when
 *   the AST is not a flat list of conditions on known fields (then `conditions` is empty)
 */
export function parseFilter(ast, fields) {
  if (ast === null || ast === undefined) return { join: "and", conditions: [], foreign: false };
  let join = "and";
  let items = [ast];
  if (ast && typeof ast === "object" && !Array.isArray(ast) && !isCondition(ast)) {
    const keys = Object.keys(ast);
    if (keys.length === 1 && (keys[0] === "and" || keys[0] === "or") && Array.isArray(ast[keys[0]])) {
      join = keys[0];
      items = ast[join];
    }
  }
  const conditions = items.map((c) => editable(c, fields));
  if (conditions.length === 0 || conditions.some((c) => c === null)) return { join: "and", conditions: [], foreign: true };
  return { join, conditions, foreign: false };
}

/** The AST for the rows: null without conditions, one condition alone, else a group. */
export function buildFilter(conditions, join) {
  if (conditions.length === 0) return null;
  return conditions.length === 1 ? conditions[0] : { [join === "or" ? "or" : "and"]: conditions };
}

// -- the filter builder ----------------------------------------------------------------

function defaultOp(field) {
  return DEFAULT_OPS.find((op) => field.ops.includes(op)) || field.ops[0];
}

class FilterBuilder {
  constructor(form, data) {
    this.form = form;
    this.fields = data.fields || {};
    this.opLabels = data.op_labels || {};
    this.hidden = form.querySelector("input[type=hidden][name=filter]");
    this.rowsBox = form.querySelector(".lw-filter-rows");
    this.join = form.querySelector(".lw-filter-join");
    this.add = form.querySelector(".lw-add-condition");
    this.rows = [];
    this.dirty = false;
    const parsed = parseFilter(data.filter, this.fields);
    this.foreign = parsed.foreign;
    if (this.join) this.join.value = parsed.join;
    if (parsed.foreign) {
      this.rowsBox.before(el("p", { class: "lw-filter-note", text: _("This filter was built elsewhere; editing it replaces it.") }));
    }
    for (const cond of parsed.conditions) this.addRow(cond);
    const touched = () => {
      this.dirty = true;
    };
    this.rowsBox.addEventListener("change", touched);
    this.rowsBox.addEventListener("input", touched);
    if (this.join) this.join.addEventListener("change", touched);
    if (this.add) {
      this.add.addEventListener("click", () => {
        touched();
        const row = this.addRow(null);
        if (row) row.fieldSelect.focus();
      });
    }
    this.updateAdd();
    form.addEventListener("submit", () => this.write());
  }

  /** No more rows than a filter may have conditions. */
  updateAdd() {
    if (this.add) this.add.disabled = this.rows.length >= RULES.max_conditions;
  }

  addRow(cond) {
    const names = Object.keys(this.fields);
    if (names.length === 0 || this.rows.length >= RULES.max_conditions) return null;
    const row = { node: el("div", { class: "lw-filter-row" }), editor: null, op: null };
    row.fieldSelect = el("select", { class: "lw-filter-field", "aria-label": _("Field") },
      names.map((n) => option(n, this.fields[n].label || n)));
    row.opSelect = el("select", { class: "lw-filter-op", "aria-label": _("Condition") });
    row.valueBox = el("span", { class: "lw-filter-value" });
    const remove = el("button", { type: "button", class: "lw-filter-remove icon-button", "aria-label": _("Remove condition"), text: "×" });
    row.node.append(row.fieldSelect, row.opSelect, row.valueBox, remove);
    row.fieldSelect.addEventListener("change", () => this.setField(row, row.fieldSelect.value, row.opSelect.value, undefined));
    row.opSelect.addEventListener("change", () => {
      const carried = carryValue(row.editor.read(), row.op, row.opSelect.value);
      this.setOp(row, row.opSelect.value, carried);
    });
    remove.addEventListener("click", () => this.removeRow(row));
    this.rowsBox.append(row.node);
    this.rows.push(row);
    if (cond) this.setField(row, cond.field, cond.op, cond.value);
    else this.setField(row, names[0], null, undefined);
    this.updateAdd();
    return row;
  }

  setField(row, name, op, value) {
    const field = this.fields[name];
    row.fieldSelect.value = name;
    row.opSelect.replaceChildren(...field.ops.map((o) => option(o, this.opLabels[o] || o)));
    this.setOp(row, field.ops.includes(op) ? op : defaultOp(field), value);
  }

  setOp(row, op, value) {
    row.op = op;
    row.opSelect.value = op;
    row.editor = valueEditor(row.fieldSelect.value, this.fields[row.fieldSelect.value], op, value);
    row.valueBox.replaceChildren(row.editor.node);
  }

  removeRow(row) {
    this.dirty = true;
    const i = this.rows.indexOf(row);
    this.rows.splice(i, 1);
    row.node.remove();
    this.updateAdd();
    const next = this.rows[i] || this.rows[i - 1];
    (next ? next.fieldSelect : this.add)?.focus();
  }

  /** The conditions the rows hold; a row without a value is left out. */
  conditions() {
    const out = [];
    for (const row of this.rows) {
      const value = row.editor.read();
      if (value !== undefined) out.push({ field: row.fieldSelect.value, op: row.op, value });
    }
    return out;
  }

  write() {
    if (!this.hidden || (this.foreign && !this.dirty)) return;
    const ast = buildFilter(this.conditions(), this.join ? this.join.value : "and");
    if (ast === null) {
      this.hidden.removeAttribute("name"); // keep the address clean
      this.hidden.value = "";
    } else {
      this.hidden.name = "filter";
      this.hidden.value = JSON.stringify(ast);
    }
  }
}

// -- bulk selection and update ---------------------------------------------------------

/** The control that sets a field of `kind` in a bulk update (named `value`, as the server reads it). */
export function bulkControl(kind, choices, id) {
  const attrs = { name: "value", id };
  if (kind === "choice" || kind === "multi_choice") {
    const multiple = kind === "multi_choice";
    const select = el("select", { ...attrs, multiple, size: multiple ? Math.min(Math.max(choices.length, 2), 5) : null });
    if (!multiple) select.append(option("", _("— none —")));
    for (const c of choices) select.append(option(c.value, c.label));
    return select;
  }
  if (kind === "boolean") return el("select", attrs, [option("true", _("yes")), option("false", _("no"))]);
  const inputs = { date: "date", datetime: "datetime-local", time: "time", integer: "number", email: "email", url: "url", phone: "tel" };
  const input = el("input", { ...attrs, type: inputs[kind] || "text" });
  if (kind === "integer") input.step = "1";
  if (["decimal", "currency", "percent"].includes(kind)) input.inputMode = "decimal";
  return input;
}

class BulkBar {
  constructor(root, data) {
    this.root = root;
    this.fields = data.fields || {};
    this.bar = root.querySelector(".lw-bulk-bar");
    this.count = this.bar && this.bar.querySelector(".lw-bulk-count");
    this.all = root.querySelector("input.lw-select-all");
    if (this.count) this.count.setAttribute("role", "status");
    root.addEventListener("change", (event) => {
      if (event.target.matches("input.lw-select-all")) this.selectAll(event.target.checked);
      else if (event.target.matches("input.lw-row-select")) this.update();
      else if (event.target.matches("select.lw-bulk-field")) this.renderValue();
    });
    this.update();
    this.renderValue();
  }

  boxes() {
    return [...this.root.querySelectorAll("input.lw-row-select")];
  }

  selectAll(on) {
    for (const box of this.boxes()) box.checked = on;
    this.update();
  }

  update() {
    const boxes = this.boxes();
    const n = boxes.filter((b) => b.checked).length;
    if (this.bar) this.bar.hidden = n === 0;
    if (this.count) this.count.textContent = _("%(n)s selected", { n });
    if (this.all) {
      this.all.checked = n > 0 && n === boxes.length;
      this.all.indeterminate = n > 0 && n < boxes.length;
    }
  }

  renderValue() {
    const select = this.root.querySelector("select.lw-bulk-field");
    const box = this.root.querySelector(".lw-bulk-value");
    if (!select || !box) return;
    const chosen = select.selectedOptions[0];
    if (!chosen) return;
    const kind = chosen.dataset.kind || "text";
    const field = this.fields[select.value] || {};
    const label = box.querySelector("label");
    const old = box.querySelector("[name=value]");
    const id = (old && old.id) || (label && label.htmlFor) || "lw-bulk-value-input";
    const control = bulkControl(kind, field.choices || [], id);
    if (!label) control.setAttribute("aria-label", _("Value"));
    box.replaceChildren(...(label ? [label, control] : [control]));
  }
}

/**
 * Make a list page live.
 *
 * @param {HTMLElement} root the `.lw-list` element
 * @param {object} data the page data (see the module header)
 */
export function initList(root, data) {
  if (data.rules) RULES = data.rules;
  if (data.titles) TITLES = data.titles;
  const form = root.querySelector("form.lw-filter");
  const builder = form && form.querySelector(".lw-filter-rows") ? new FilterBuilder(form, data) : null;
  const bulk = new BulkBar(root, data);
  return { builder, bulk };
}

function readPageData() {
  const node = document.getElementById("lw-list-data");
  if (!node) return {};
  try {
    return JSON.parse(node.textContent || "{}") || {};
  } catch (exc) {
    console.warn("lw-list: the list data is not JSON", exc);
    return {};
  }
}

function start() {
  const roots = document.querySelectorAll(".lw-list");
  if (roots.length === 0) return;
  const data = readPageData();
  for (const root of roots) {
    if (root.dataset.lwReady) continue;
    root.dataset.lwReady = "1";
    initList(root, data);
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
