/**
 * Live create/edit forms: conditions, dependent choices, lookup autocomplete,
 * JSON checks and the required check before a post.
 *
 * The server renders a complete form (form.html) and stays authoritative: it
 * applies every rule again on the post (runtime/evaluation.py `apply_rules`) and
 * re-renders with errors inline. This module applies the same rules as the user
 * types, so nobody has to post to find out a field appeared or became required.
 * It activates on `form.lw-form` with the page data in
 * `<script type="application/json" id="lw-form-data">`:
 *
 *   {"rules": rules_document(obj), "env": {"old", "paths", "user_id", "user_role", "now",
 *    "today", ["is_admin"]}, "fields": {name: {kind, widget, required, read_only, label,
 *    choices?, lookup?: {object, title_field, fields}}}, "editing": bool}
 *
 * Semantics, as apply_rules has them:
 * - visible: every visible_if (the field's and its section's) is exactly true.
 * - required: visible, and statically required or any required_if true.
 * - read-only: statically, or (not for administrators) any read_only_if true, judged on
 *   the stored record when editing (so changing the field that locks another cannot
 *   unlock it) and on the values being entered when creating. A field that becomes
 *   locked gets its stored value back (editing) or is cleared (creating), as the
 *   server refuses any other value for it.
 * - a dependent choice offers only the options its controlling value allows
 *   (a boolean controller is looked up as "true"/"false", an empty one allows none);
 *   a value no longer allowed is cleared and a change event fired.
 * - a tree this browser cannot run (UnsupportedError) or that fails (EvaluationError)
 *   counts as not true, with one console warning; the server decides on the post.
 * - a message of the server (`.lw-server-error`, at a field or above the form) names the
 *   fields that decided it (`data-reads`) and the validation rule behind it, if any
 *   (`data-rule`). Once one of those fields differs from what was posted, the rule is
 *   checked again here and the message stays only while it still holds; a message
 *   without a rule (or whose rule this browser cannot run) goes. When none is left, the
 *   "correct the errors" banner (`.lw-errors-banner`) goes too.
 * The record the conditions see is the stored one overlaid with the form's values,
 * with formula fields recomputed from their trees, and lookup paths
 * (`account.industry`) fetched from the API when a lookup changes (one hop; the
 * server's values stay for deeper paths).
 */
import { compile } from "./lw-expr.js";
import { _, reveal } from "./lw-ui.js";

const API = "/api/v1/data";
const DEBOUNCE_MS = 150;
const SUGGESTIONS = 8;
// A field's kind is the built-in field type whose values its are like (FieldType.kind:
// a plugin's type built on text is "text"); the page never sends a type's own name.
/** Kinds whose text the server does not strip (parse_form). */
const UNSTRIPPED = new Set(["long_text", "json"]);
/** Kinds the conditions never read from the form (the server's values stay). */
const SKIPPED_KINDS = new Set(["json", "formula", "rollup", "autonumber"]);

const hasOwn = (obj, key) => obj != null && Object.prototype.hasOwnProperty.call(obj, key);

// -- conditions -----------------------------------------------------------------

const warned = new Set();

function warnOnce(key, exc) {
  if (warned.has(key)) return;
  warned.add(key);
  console.warn(`lw-form: ${key} is left to the server (${exc && exc.name}: ${exc && exc.message})`);
}

/** Compile a tree; a tree that cannot be compiled becomes a function that throws. */
function compileTree(tree, key) {
  try {
    return compile(tree);
  } catch (exc) {
    warnOnce(key, exc);
    return () => {
      throw exc;
    };
  }
}

/** Whether a compiled condition is exactly true; failures count as not true. */
function holds(fn, env, key) {
  try {
    return fn(env) === true;
  } catch (exc) {
    warnOnce(key, exc);
    return false;
  }
}

// -- reading and writing controls ---------------------------------------------------

/** The inputs that carry a field's value (not the hidden helpers around them). */
function valueInputs(f) {
  const c = f.control;
  if (!c) return [];
  if (f.lookup) return [f.lookup.hidden];
  if (c.tagName === "FIELDSET") return [...c.querySelectorAll("input[type=radio], input[type=checkbox]")];
  if (c.tagName === "OUTPUT") return [];
  return [c];
}

/** What the field would submit, as a list of strings (empty when nothing). */
function submitted(f) {
  const c = f.control;
  if (!c) return [];
  if (c.tagName === "SELECT") return [...c.selectedOptions].map((o) => o.value);
  if (c.tagName === "FIELDSET") return valueInputs(f).filter((i) => i.checked).map((i) => i.value);
  if (c.type === "checkbox") return c.checked ? [c.value || "true"] : [];
  if (f.lookup) return [f.lookup.hidden.value];
  return c.tagName === "OUTPUT" ? [] : [c.value];
}

/**
 * A datetime-local value as the server completes it: typed in the page's time zone
 * (`<html data-time-zone>`, UTC when none), as an instant in UTC.
 */
function datetimeValue(text) {
  const tail = text.slice(10);
  if (tail.endsWith("Z") || tail.includes("+") || tail.includes("-")) return text;
  const utc = text.length === 16 ? `${text}:00Z` : `${text}Z`;
  const zone = document.documentElement.dataset.timeZone || "UTC";
  const wall = Date.parse(utc);
  if (zone === "UTC" || Number.isNaN(wall)) return utc;
  try {
    // The instant whose wall-clock time in `zone` is `text`; across a clock change the
    // offset before it, as the server's zoneinfo takes.
    let instant = wall - zoneOffset(zone, wall);
    instant = wall - zoneOffset(zone, instant);
    return new Date(instant).toISOString().replace(".000Z", "Z");
  } catch (exc) {
    warnOnce(`time zone ${zone}`, exc);
    return utc;
  }
}

/** How far `zone`'s wall clock is ahead of UTC at `instant` (milliseconds). */
function zoneOffset(zone, instant) {
  const parts = {};
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  for (const p of format.formatToParts(new Date(instant))) parts[p.type] = Number(p.value);
  const wall = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
  return wall - Math.floor(instant / 1000) * 1000;
}

/** Text from a control as the value of a field of `kind` (see parse_form). */
export function typedValue(kind, raw) {
  const text = UNSTRIPPED.has(kind) ? raw : raw.trim();
  if (text.trim() === "") return null;
  switch (kind) {
    case "integer":
      return /^-?\d+$/.test(text) ? Number(text) : null;
    case "lookup":
      return /^\d+$/.test(text) ? Number(text) : null;
    case "boolean":
      return text === "true" ? true : text === "false" ? false : null;
    case "datetime":
      return datetimeValue(text);
    default:
      return text; // text, choices, decimals (read exactly by lw-expr), dates, times
  }
}

/** The field's current value for the expression environment; undefined: not read here. */
function readValue(f) {
  const c = f.control;
  if (!c || c.tagName === "OUTPUT" || SKIPPED_KINDS.has(f.kind)) return undefined;
  if (f.lookup) return typedValue("lookup", f.lookup.hidden.value);
  const values = submitted(f);
  if (f.kind === "multi_choice") return values.filter((v) => v !== "");
  if (f.kind === "boolean" && c.type === "checkbox") return c.checked;
  return typedValue(f.kind, values.length ? values[values.length - 1] : "");
}

function isBlank(f) {
  if (f.kind === "json") return f.control && f.control.tagName === "TEXTAREA" ? f.control.value.trim() === "" : false;
  const v = readValue(f);
  return v === null || v === "" || (Array.isArray(v) && v.length === 0);
}

/** What the controls hold now, to put back later. */
function snapshot(f) {
  const state = valueInputs(f).map((el) => ({
    el,
    value: el.value,
    checked: el.checked,
    selected: el.tagName === "SELECT" ? [...el.options].filter((o) => o.selected).map((o) => o.value) : null,
  }));
  return { state, text: f.lookup ? f.lookup.text.value : null };
}

function restore(f, snap) {
  let changed = false;
  for (const { el, value, checked, selected } of snap.state) {
    if (selected) {
      for (const o of f.allOptions || el.options) {
        const on = selected.includes(o.value);
        if (o.selected !== on) {
          o.selected = on;
          changed = true;
        }
      }
    } else if (el.type === "checkbox" || el.type === "radio") {
      changed = changed || el.checked !== checked;
      el.checked = checked;
    } else {
      changed = changed || el.value !== value;
      el.value = value;
    }
  }
  if (f.lookup && snap.text !== null) f.lookup.box.setTitle(snap.text);
  return changed;
}

function clearValue(f) {
  const blank = {
    state: valueInputs(f).map((el) => ({ el, value: "", checked: false, selected: el.tagName === "SELECT" ? [""] : null })),
    text: f.lookup ? "" : null,
  };
  return restore(f, blank);
}

function fireChange(f) {
  const target = valueInputs(f)[0] || f.control;
  if (target) target.dispatchEvent(new Event("change", { bubbles: true }));
}

// -- lookup autocomplete ----------------------------------------------------------

/** A combobox over `GET /api/v1/data/<object>?search=`: type, arrows, Enter picks. */
export class LookupBox {
  constructor(box) {
    this.box = box;
    this.hidden = box.querySelector("input[type=hidden]");
    this.text = box.querySelector("[role=combobox]");
    this.list = document.getElementById(this.text.getAttribute("aria-controls")) || box.querySelector("[role=listbox]");
    this.object = box.dataset.object;
    this.titleField = box.dataset.titleField || "id";
    this.title = this.text.value;
    this.timer = null;
    this.seq = 0;
    this.abort = null;
    this.active = -1;
    this.text.addEventListener("input", () => this.onInput());
    this.text.addEventListener("keydown", (event) => this.onKey(event));
    this.list.addEventListener("mousedown", (event) => event.preventDefault());
    this.list.addEventListener("click", (event) => {
      const li = event.target.closest("[role=option]");
      if (li && li.getAttribute("aria-disabled") !== "true") this.pick(li);
    });
    box.addEventListener("focusout", (event) => {
      if (!box.contains(event.relatedTarget)) this.onLeave();
    });
  }

  get isOpen() {
    return !this.list.hidden;
  }

  setTitle(title) {
    this.title = title;
    this.text.value = title;
  }

  onInput() {
    if (this.text.readOnly) return;
    clearTimeout(this.timer);
    const q = this.text.value.trim();
    if (q === "") {
      this.seq += 1;
      this.close();
      if (this.hidden.value !== "") {
        this.hidden.value = "";
        this.title = "";
        this.hidden.dispatchEvent(new Event("change", { bubbles: true }));
      }
      return;
    }
    this.timer = setTimeout(() => this.search(q), DEBOUNCE_MS);
  }

  onLeave() {
    clearTimeout(this.timer);
    this.seq += 1;
    this.close();
    // What is shown must be what is chosen: half-typed text goes back to the pick.
    if (this.text.value !== this.title) this.text.value = this.hidden.value === "" ? "" : this.title;
  }

  onKey(event) {
    if (this.text.readOnly) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!this.isOpen) {
        const q = this.text.value.trim();
        if (q !== "") {
          clearTimeout(this.timer);
          this.search(q);
        }
        return;
      }
      this.move(event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Enter" && this.isOpen) {
      event.preventDefault(); // never submit the form from an open list
      const li = this.options()[this.active];
      if (li) this.pick(li);
      else this.close();
    } else if (event.key === "Escape" && this.isOpen) {
      event.preventDefault();
      this.close();
    }
  }

  options() {
    return [...this.list.querySelectorAll("[role=option]:not([aria-disabled=true])")];
  }

  move(delta) {
    const opts = this.options();
    if (opts.length === 0) return;
    this.active = this.active < 0 ? (delta > 0 ? 0 : opts.length - 1) : (this.active + delta + opts.length) % opts.length;
    opts.forEach((li, i) => li.setAttribute("aria-selected", i === this.active ? "true" : "false"));
    const li = opts[this.active];
    this.text.setAttribute("aria-activedescendant", li.id);
    li.scrollIntoView({ block: "nearest" });
  }

  async search(q) {
    const seq = ++this.seq;
    if (this.abort) this.abort.abort();
    this.abort = new AbortController();
    const fields = [...new Set(["id", this.titleField])].join(",");
    const query = new URLSearchParams({ search: q, limit: String(SUGGESTIONS), fields });
    let rows;
    try {
      const response = await fetch(`${API}/${encodeURIComponent(this.object)}?${query}`, {
        credentials: "same-origin", headers: { Accept: "application/json" }, signal: this.abort.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      rows = (await response.json()).data;
      if (!Array.isArray(rows)) throw new Error("the answer has no data list");
    } catch (exc) {
      if (seq !== this.seq || (exc && exc.name === "AbortError")) return;
      console.warn("lw-form: lookup search failed", exc);
      this.render([], _("Suggestions could not be loaded."));
      return;
    }
    if (seq === this.seq) this.render(rows, _("No matches"));
  }

  render(rows, emptyText) {
    const items = rows.map((row, i) => {
      const li = document.createElement("li");
      li.id = `${this.list.id}-opt-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      li.dataset.id = String(row.id);
      const title = row[this.titleField];
      li.textContent = title === null || title === undefined || title === "" ? `#${row.id}` : String(title);
      return li;
    });
    if (items.length === 0) {
      const li = document.createElement("li");
      li.className = "lw-listbox-note";
      li.setAttribute("role", "option");
      li.setAttribute("aria-disabled", "true");
      li.textContent = emptyText;
      items.push(li);
    }
    this.list.replaceChildren(...items);
    this.active = -1;
    this.text.removeAttribute("aria-activedescendant");
    this.list.hidden = false;
    this.text.setAttribute("aria-expanded", "true");
  }

  close() {
    this.list.hidden = true;
    this.active = -1;
    this.text.setAttribute("aria-expanded", "false");
    this.text.removeAttribute("aria-activedescendant");
  }

  pick(li) {
    this.hidden.value = li.dataset.id;
    this.setTitle(li.textContent);
    this.close();
    this.hidden.dispatchEvent(new Event("change", { bubbles: true }));
  }
}

// -- the form ----------------------------------------------------------------------

/** One `.lw-field` of the form with its rules. */
function describeField(form, wrap, data) {
  const name = wrap.dataset.field;
  const meta = (data.fields && data.fields[name]) || {};
  const rules = (data.rules && data.rules.fields && data.rules.fields[name]) || {};
  const control = form.querySelector(`#${CSS.escape(`f-${name}`)}`);
  const f = {
    name, wrap, meta, control,
    kind: wrap.dataset.kind || meta.kind || "text",
    widget: wrap.dataset.widget || meta.widget || "",
    error: wrap.querySelector(".lw-error"),
    depends: rules.depends_on || null,
    conds: {},
    locked: null,
    visible: !wrap.hidden,
    required: false,
  };
  for (const [kind, key] of [["visible", "visible_if"], ["required", "required_if"], ["readOnly", "read_only_if"]]) {
    f.conds[kind] = (rules[key] || []).map((tree, i) => {
      const label = `${name}.${key}[${i}]`;
      return { fn: compileTree(tree, label), label };
    });
  }
  const box = wrap.querySelector(".lw-lookup");
  if (box && box.querySelector("[role=combobox]") && box.querySelector("input[type=hidden]")) {
    f.lookup = { box: new LookupBox(box), hidden: box.querySelector("input[type=hidden]"), text: box.querySelector("[role=combobox]") };
    f.lastId = readValue(f);
  }
  if (control && control.tagName === "SELECT") f.allOptions = [...control.options];
  dropServerCarriers(f);
  f.initial = snapshot(f);
  return f;
}

/** A read-only select or choice group arrives with hidden copies of its value; we keep our own. */
function dropServerCarriers(f) {
  const grouped = f.control && ["SELECT", "FIELDSET"].includes(f.control.tagName);
  if (f.lookup || !f.control || (!grouped && f.kind !== "boolean")) return;
  const hidden = [...f.wrap.querySelectorAll(`input[type=hidden][name="${CSS.escape(f.name)}"]`)];
  const sentinel = f.kind === "boolean" ? hidden.find((h) => h.value === "false") : null;
  for (const h of hidden) if (h !== sentinel) h.remove();
}

class LiveForm {
  constructor(form, data) {
    this.form = form;
    this.data = data;
    const env = data.env || {};
    this.old = env.old && typeof env.old === "object" ? env.old : null;
    this.paths = { ...(env.paths || {}) };
    this.base = { user_id: env.user_id ?? null, user_role: env.user_role ?? null, now: env.now, today: env.today };
    this.editing = typeof data.editing === "boolean" ? data.editing : this.old !== null;
    this.admin = env.is_admin === true || (env.is_admin === undefined && env.user_role === "admin");
    // Decimals exactly (as text), so a preview rounds as the server does.
    this.formulas = Object.entries((data.rules && data.rules.fields) || {})
      .filter(([, r]) => r.formula)
      .map(([name, r]) => {
        try {
          return { name, fn: compile(r.formula, { exact: true }), ok: true };
        } catch (exc) {
          warnOnce(`${name}.formula`, exc);
          return { name, fn: () => { throw exc; }, ok: false };
        }
      });
    this.fields = [...form.querySelectorAll(".lw-field[data-field]")].map((wrap) => describeField(form, wrap, data));
    this.rulesByName = new Map(((data.rules && data.rules.validations) || []).map((v) => {
      const label = `validation ${v.name}`;
      return [v.name, { fn: compileTree(v.condition, label), label }];
    }));
    this.serverErrors = [...document.querySelectorAll(".lw-server-error")].map((el) => ({
      el,
      reads: (el.dataset.reads || "").split(" ").filter(Boolean),
      rule: el.dataset.rule || null,
    }));
    this.posted = new Map(this.fields.map((f) => [f.name, valueKey(f)]));
    this.busy = false;
    form.addEventListener("input", (event) => this.onEdit(event));
    form.addEventListener("change", (event) => this.onEdit(event));
    form.addEventListener("submit", (event) => this.onSubmit(event));
    this.refresh();
  }

  /** The environment lw-expr.js evaluates: stored record + form values + formulas. */
  env() {
    const rec = { ...(this.old || {}) };
    for (const f of this.fields) {
      const v = readValue(f);
      if (v !== undefined) rec[f.name] = v;
    }
    const env = { rec, old: this.old, paths: this.paths, ...this.base };
    // Formulas may read each other: as many passes as formulas settle any order.
    for (let pass = 0; pass < this.formulas.length; pass++) {
      for (const { name, fn } of this.formulas) {
        try {
          rec[name] = fn(env);
        } catch (exc) {
          if (exc && exc.name === "EvaluationError") rec[name] = null;
        }
      }
    }
    return env;
  }

  refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      for (let pass = 0; pass < 10; pass++) {
        const pathsChanged = this.checkLookups();
        if (!this.applyOnce() && !pathsChanged) break;
      }
      this.applySections();
      this.showFormulas();
      this.settleServerErrors();
    } finally {
      this.busy = false;
    }
  }

  /** Formula fields this browser can compute show their value for what is typed now. */
  showFormulas() {
    let env = null;
    for (const f of this.fields) {
      const spec = f.meta.computed;
      if (!spec || !spec.preview || !f.control || f.control.tagName !== "OUTPUT") continue;
      const formula = this.formulas.find((x) => x.name === f.name);
      if (!formula || !formula.ok) continue; // the saved value stays, "computed when saved"
      env = env || this.env();
      const text = formatValue(spec, env.rec[f.name]);
      if (f.control.dataset.lwShown !== text) {
        f.control.dataset.lwShown = text;
        if (text === "") {
          const dash = document.createElement("span");
          dash.className = "muted";
          dash.textContent = "—";
          f.control.replaceChildren(dash);
        } else {
          f.control.textContent = text;
        }
      }
      const note = f.wrap.querySelector(".lw-computed-note");
      if (note) note.hidden = true;
    }
  }

  /** Re-check or drop the server's messages whose fields changed since the post. */
  settleServerErrors() {
    if (this.serverErrors.length === 0) return;
    this.serverErrors = this.serverErrors.filter((e) => e.el.isConnected);
    const changed = new Set(this.fields.filter((f) => valueKey(f) !== this.posted.get(f.name)).map((f) => f.name));
    if (changed.size === 0) return;
    let env = null;
    const touched = new Set();
    this.serverErrors = this.serverErrors.filter((e) => {
      if (!e.el.isConnected) return false; // replaced by a message of this module
      if (!e.reads.some((name) => changed.has(name))) return true;
      const rule = e.rule && this.rulesByName.get(e.rule);
      if (rule) {
        env = env || this.env();
        if (holds(rule.fn, env, rule.label)) return true;
      }
      const wrap = e.el.closest(".lw-field[data-field]");
      if (wrap) touched.add(wrap);
      e.el.remove();
      return false;
    });
    for (const wrap of touched) {
      const f = this.fields.find((x) => x.wrap === wrap);
      if (f && f.error && !f.error.querySelector(".lw-server-error")) setError(f, "");
    }
    if (this.serverErrors.length === 0) {
      for (const banner of document.querySelectorAll(".lw-errors-banner")) banner.hidden = true;
    }
  }

  /** One round of rules; true when it changed a value (so the rules run again). */
  applyOnce() {
    let env = this.env();
    let changed = false;
    for (const f of this.fields) {
      if (f.depends && this.applyDependent(f, env.rec)) changed = true;
    }
    if (changed) env = this.env();
    const lockEnv = this.editing ? { ...env, rec: { ...(this.old || {}) }, old: null } : env;
    for (const f of this.fields) {
      const visible = f.conds.visible.every((c) => holds(c.fn, env, c.label));
      const required = visible && (f.meta.required === true || f.conds.required.some((c) => holds(c.fn, env, c.label)));
      const locked = f.meta.read_only === true
        || (!this.admin && f.conds.readOnly.some((c) => holds(c.fn, lockEnv, c.label)));
      if (locked && f.locked === false && !f.meta.read_only && this.settleLocked(f)) changed = true;
      this.show(f, visible, required, locked);
    }
    return changed;
  }

  /** A field just locked by read_only_if: the server accepts only its stored value. */
  settleLocked(f) {
    const changed = this.editing ? restore(f, f.initial) : clearValue(f);
    if (changed) fireChange(f);
    return changed;
  }

  show(f, visible, required, locked) {
    f.visible = visible;
    f.required = required;
    f.wrap.hidden = !visible;
    f.wrap.classList.toggle("is-required", required);
    const target = f.lookup ? f.lookup.text : f.control;
    if (target) {
      if (required) target.setAttribute("aria-required", "true");
      else target.removeAttribute("aria-required");
    }
    this.applyReadOnly(f, locked);
    f.locked = locked;
  }

  applyReadOnly(f, locked) {
    f.wrap.classList.toggle("is-readonly", locked);
    const c = f.control;
    if (!c || c.tagName === "OUTPUT") return;
    if (f.lookup) {
      f.lookup.text.readOnly = locked;
      if (locked) f.lookup.box.close();
      return;
    }
    const isText = (c.tagName === "INPUT" && !["checkbox", "radio"].includes(c.type)) || c.tagName === "TEXTAREA";
    if (isText) {
      c.readOnly = locked;
      return;
    }
    // Selects and checkable inputs have no read-only state: disable them and let a
    // hidden copy carry the value, so the post still sends it.
    for (const el of valueInputs(f)) el.disabled = locked || el.dataset.lwDisallowed === "1";
    for (const old of f.wrap.querySelectorAll("input.lw-carrier")) old.remove();
    if (!locked) return;
    let anchor = c;
    for (const value of submitted(f)) {
      const carrier = document.createElement("input");
      carrier.type = "hidden";
      carrier.name = f.name;
      carrier.value = value;
      carrier.className = "lw-carrier";
      anchor.after(carrier);
      anchor = carrier;
    }
  }

  /** Offer only the options the controlling value allows; clear a value it no longer allows. */
  applyDependent(f, rec) {
    let key = rec[f.depends.field];
    if (typeof key === "boolean") key = key ? "true" : "false";
    const options = f.depends.options || {};
    const allowed = new Set(typeof key === "string" && hasOwn(options, key) ? options[key] : []);
    const c = f.control;
    let cleared = false;
    if (c && c.tagName === "SELECT") {
      const ok = (value) => value === "" || allowed.has(value);
      const before = [...c.selectedOptions].map((o) => o.value);
      const wanted = before.filter(ok);
      cleared = wanted.length !== before.length;
      const keep = f.allOptions.filter((o) => ok(o.value));
      const current = [...c.options];
      if (keep.length !== current.length || keep.some((o, i) => o !== current[i])) c.replaceChildren(...keep);
      // Set the selection explicitly: browsers differ in what they select when options move.
      if (c.multiple) for (const o of keep) o.selected = wanted.includes(o.value);
      else c.value = wanted.length ? wanted[0] : "";
    } else if (c && c.tagName === "FIELDSET") {
      for (const input of valueInputs(f)) {
        const ok = allowed.has(input.value);
        (input.closest("label") || input).hidden = !ok;
        input.dataset.lwDisallowed = ok ? "" : "1";
        input.disabled = !ok || f.locked === true;
        if (!ok && input.checked) {
          input.checked = false;
          cleared = true;
        }
      }
    }
    if (cleared) fireChange(f);
    return cleared;
  }

  applySections() {
    for (const section of this.form.querySelectorAll(".lw-section")) {
      const fields = [...section.querySelectorAll(".lw-field[data-field]")];
      if (fields.length) section.hidden = fields.every((w) => w.hidden);
    }
  }

  /** Start fetching lookup paths for lookups whose id changed; true if paths changed now. */
  checkLookups() {
    let changed = false;
    for (const f of this.fields) {
      if (!f.lookup) continue;
      const id = readValue(f);
      if (id === f.lastId) continue;
      f.lastId = id;
      const names = (f.meta.lookup && f.meta.lookup.fields) || [];
      if (names.length === 0) continue;
      f.pathSeq = (f.pathSeq || 0) + 1;
      if (id === null) {
        for (const n of names) this.paths[`${f.name}.${n}`] = null;
        changed = true;
      } else {
        this.fetchPaths(f, id, names, f.pathSeq);
      }
    }
    return changed;
  }

  async fetchPaths(f, id, names, seq) {
    const object = (f.meta.lookup && f.meta.lookup.object) || f.lookup.box.object;
    const query = new URLSearchParams({ fields: names.join(",") });
    let row = null;
    try {
      const response = await fetch(`${API}/${encodeURIComponent(object)}/${id}?${query}`, {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      row = await response.json();
    } catch (exc) {
      console.warn(`lw-form: could not read ${object} ${id} for the conditions`, exc);
    }
    if (seq !== f.pathSeq) return; // another record was picked meanwhile
    for (const n of names) this.paths[`${f.name}.${n}`] = row && hasOwn(row, n) ? row[n] : null;
    this.refresh();
  }

  onEdit(event) {
    if (this.busy) return;
    const wrap = event.target.closest && event.target.closest(".lw-field[data-field]");
    const f = wrap && this.fields.find((x) => x.wrap === wrap);
    if (f) {
      // Only a message of this module; the server's are settled by refresh().
      if (f.error && !f.error.querySelector(".lw-server-error")) setError(f, "");
      if (f.kind === "json" && event.type === "input") checkJson(f);
    }
    this.refresh();
  }

  onSubmit(event) {
    this.refresh();
    const problems = [];
    for (const f of this.fields) {
      if (!f.visible) continue;
      if (f.kind === "json" && checkJson(f) === false) problems.push(f);
      else if (f.required && isBlank(f)) {
        setError(f, _("This field is required."));
        problems.push(f);
      }
    }
    if (problems.length === 0) return;
    event.preventDefault();
    const first = problems[0];
    reveal(first.wrap);
    focusField(first);
  }
}

const INTL_LOCALES = { en: "en-US" };
const INTL_DATE = { dateStyle: "medium", timeZone: "UTC" };

function numeric(v) {
  return typeof v === "string" ? v : String(v); // exact text: Intl formats it without rounding first
}

/**
 * A computed value as the server's present.display writes it for the page's language:
 * `spec` is the form data's `computed` entry ({kind, scale, currency}); '' for empty.
 * Datetimes are shown in the page's time zone (`<html data-time-zone>`).
 */
export function formatValue(spec, v, lang = document.documentElement.lang || "en") {
  if (v === null || v === undefined || v === "") return "";
  const locale = INTL_LOCALES[lang] || lang;
  const places = spec.scale ?? 2;
  const fixed = { minimumFractionDigits: places, maximumFractionDigits: places };
  try {
    switch (spec.kind) {
      case "currency":
        return new Intl.NumberFormat(locale, { style: "currency", currency: spec.currency || "USD", ...fixed })
          .format(numeric(v));
      case "decimal":
        return new Intl.NumberFormat(locale, fixed).format(numeric(v));
      case "integer":
      case "number":
        return new Intl.NumberFormat(locale, { maximumFractionDigits: 20 }).format(numeric(v));
      case "percent":
        return `${new Intl.NumberFormat(locale, { maximumFractionDigits: 20 }).format(numeric(v))}%`;
      case "boolean":
        return v ? _("Yes") : _("No");
      case "date":
        return new Intl.DateTimeFormat(locale, INTL_DATE).format(new Date(`${v}T00:00:00Z`));
      case "datetime": {
        const timeZone = document.documentElement.dataset.timeZone || "UTC";
        const when = new Date(v);
        const day = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeZone }).format(when);
        const parts = new Intl.DateTimeFormat(locale, { timeStyle: "short", timeZone }).format(when);
        const zone = timeZone === "UTC" ? "UTC" : (new Intl.DateTimeFormat(locale, { timeZone, timeZoneName: "short" })
          .formatToParts(when).find((p) => p.type === "timeZoneName") || { value: timeZone }).value;
        return `${day} ${parts} ${zone}`;
      }
      default:
        return String(v);
    }
  } catch (exc) {
    warnOnce(`format ${spec.kind}`, exc);
    return String(v);
  }
}

/** The field's value as comparable text (undefined for what the form does not read). */
function valueKey(f) {
  return JSON.stringify(readValue(f));
}

function setError(f, message) {
  if (!f.error) {
    if (!message) return;
    f.error = document.createElement("p");
    f.error.className = "lw-error";
    f.error.id = `f-${f.name}-error`;
    f.wrap.append(f.error);
  }
  f.error.textContent = message;
  f.wrap.classList.toggle("has-error", Boolean(message));
  const target = f.lookup ? f.lookup.text : f.control;
  if (!target) return;
  if (message) target.setAttribute("aria-invalid", "true");
  else target.removeAttribute("aria-invalid");
}

/** Check a JSON box; shows the parser's complaint at the field. Returns whether it is valid. */
function checkJson(f) {
  const text = f.control ? f.control.value : "";
  if (text.trim() === "") {
    setError(f, "");
    return true;
  }
  try {
    JSON.parse(text);
  } catch (exc) {
    setError(f, _("Not valid JSON: %(reason)s", { reason: exc.message }));
    return false;
  }
  setError(f, "");
  return true;
}

function focusField(f) {
  let target = f.lookup ? f.lookup.text : f.control;
  if (target && target.tagName === "FIELDSET") {
    target = valueInputs(f).find((i) => !i.disabled && !(i.closest("label") || i).hidden) || null;
  }
  if (target) target.focus();
}

/**
 * Make a form live.
 *
 * @param {HTMLFormElement} form a `form.lw-form`
 * @param {object} data the page data (see the module header)
 * @returns {LiveForm}
 */
export function initForm(form, data) {
  return new LiveForm(form, data || {});
}

function readPageData() {
  const el = document.getElementById("lw-form-data");
  if (!el) return {};
  try {
    return JSON.parse(el.textContent || "{}") || {};
  } catch (exc) {
    console.warn("lw-form: the form data is not JSON; the server will check the form", exc);
    return {};
  }
}

function start() {
  const forms = document.querySelectorAll("form.lw-form");
  if (forms.length === 0) return;
  const data = readPageData();
  for (const form of forms) {
    if (form.dataset.lwReady) continue;
    form.dataset.lwReady = "1";
    initForm(form, data);
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
