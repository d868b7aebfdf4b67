/**
 * Loomwork page behaviour shared by every page: translations, tabs, collapsible
 * sections and the phone navigation toggle.
 *
 * Every page loads this module (base.html); lw-form.js and lw-list.js import `_`
 * from it. Pages are complete without JavaScript: all tab panels and sections are
 * shown, and this module only hides and reveals what the server rendered.
 *
 *   import { _ } from "./lw-ui.js";
 *   _("%(n)s selected", { n: 3 });      // "3 selected", or its translation
 *
 * Translations come from `window.LW_MESSAGES`, else from the JSON in
 * `<script type="application/json" id="lw-messages">` (msgid -> translation); a
 * message missing there is shown as its msgid. Write the literal msgid inside
 * `_("...")` so Babel's JavaScript extractor finds it.
 *
 * DOM contract:
 * - tabs: `[role=tablist]` that is or is inside `.lw-tabs`, with `[role=tab][aria-controls]`
 *   buttons whose panels are found by id; arrows / Home / End move (roving tabindex).
 * - collapsible bodies: `button.lw-collapse[aria-expanded][aria-controls]` toggles `hidden`
 *   on the body it controls.
 * - phone navigation: `button.lw-nav-toggle[aria-controls]` toggles aria-expanded and the
 *   class `is-open` on the navigation (and `hidden`, when the navigation starts hidden).
 */

let catalog = null;

function messages() {
  if (catalog) return catalog;
  if (window.LW_MESSAGES && typeof window.LW_MESSAGES === "object") {
    catalog = window.LW_MESSAGES;
  } else {
    const el = document.getElementById("lw-messages");
    if (el) {
      try {
        const parsed = JSON.parse(el.textContent || "{}");
        if (parsed && typeof parsed === "object") catalog = parsed;
      } catch (exc) {
        console.warn("lw-ui: the page's message catalogue is not JSON", exc);
      }
    }
  }
  return catalog || {};
}

const hasOwn = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

/**
 * Translate a message; with `params`, fill its `%(name)s` placeholders (and `%%`),
 * as Flask-Babel's gettext does on the server.
 *
 * @param {string} msgid the English text
 * @param {object} [params] placeholder values
 * @returns {string}
 */
export function _(msgid, params) {
  const table = messages();
  const found = hasOwn(table, msgid) && typeof table[msgid] === "string" && table[msgid] !== "" ? table[msgid] : msgid;
  if (!params || Object.keys(params).length === 0) return found;
  return found.replace(/%\((\w+)\)s|%%/g, (match, name) => {
    if (match === "%%") return "%";
    return hasOwn(params, name) ? String(params[name]) : match;
  });
}

// -- tabs -------------------------------------------------------------------

const ready = new WeakSet();

function tabsOf(tablist) {
  return [...tablist.querySelectorAll("[role=tab]")].filter((t) => t.closest("[role=tablist]") === tablist);
}

function panelOf(tab) {
  const id = tab.getAttribute("aria-controls");
  return id ? document.getElementById(id) : null;
}

/**
 * Select a tab: show its panel, hide its siblings' panels, move the tab stop to it.
 *
 * @param {HTMLElement} tab a `[role=tab]` element
 * @param {{focus?: boolean}} [options]
 */
export function selectTab(tab, { focus = false } = {}) {
  const tablist = tab.closest("[role=tablist]");
  if (!tablist) return;
  for (const t of tabsOf(tablist)) {
    const on = t === tab;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
    const panel = panelOf(t);
    if (panel) panel.hidden = !on;
  }
  if (focus) tab.focus();
}

function onTabKey(event, tablist) {
  const tabs = tabsOf(tablist).filter((t) => !t.hidden && !t.disabled);
  const i = tabs.indexOf(event.target.closest("[role=tab]"));
  if (i < 0 || tabs.length === 0) return;
  const vertical = tablist.getAttribute("aria-orientation") === "vertical";
  const next = { [vertical ? "ArrowDown" : "ArrowRight"]: (i + 1) % tabs.length,
                 [vertical ? "ArrowUp" : "ArrowLeft"]: (i - 1 + tabs.length) % tabs.length,
                 Home: 0, End: tabs.length - 1 }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  selectTab(tabs[next], { focus: true });
}

/** Make every tab list under `root` work; panels of unselected tabs are hidden. */
export function initTabs(root = document) {
  const lists = root.querySelectorAll(".lw-tabs[role=tablist], .lw-tabs [role=tablist]");
  for (const tablist of lists) {
    if (ready.has(tablist)) continue;
    ready.add(tablist);
    const tabs = tabsOf(tablist);
    if (tabs.length === 0) continue;
    selectTab(tabs.find((t) => t.getAttribute("aria-selected") === "true") || tabs[0]);
    tablist.addEventListener("keydown", (event) => onTabKey(event, tablist));
    tablist.addEventListener("click", (event) => {
      const tab = event.target.closest("[role=tab]");
      if (tab && tabsOf(tablist).includes(tab)) selectTab(tab, { focus: true });
    });
  }
}

// -- collapsible sections -----------------------------------------------------

function setExpanded(button, expanded) {
  button.setAttribute("aria-expanded", expanded ? "true" : "false");
  const body = document.getElementById(button.getAttribute("aria-controls"));
  if (body) body.hidden = !expanded;
}

/** Make every `button.lw-collapse` under `root` show and hide the body it controls. */
export function initCollapsibles(root = document) {
  for (const button of root.querySelectorAll("button.lw-collapse[aria-controls]")) {
    if (ready.has(button)) continue;
    ready.add(button);
    setExpanded(button, button.getAttribute("aria-expanded") !== "false");
    button.addEventListener("click", () => setExpanded(button, button.getAttribute("aria-expanded") !== "true"));
  }
}

/**
 * Make `el` visible: select the tabs and expand the collapsed sections that hide it
 * (so that, say, the first field with an error can take the focus).
 */
export function reveal(el) {
  for (let node = el.parentElement; node; node = node.parentElement) {
    if (node.hidden && node.id) {
      if (node.getAttribute("role") === "tabpanel") {
        const tab = document.querySelector(`[role=tab][aria-controls="${CSS.escape(node.id)}"]`);
        if (tab) selectTab(tab);
      } else {
        const button = document.querySelector(`button.lw-collapse[aria-controls="${CSS.escape(node.id)}"]`);
        if (button) setExpanded(button, true);
      }
    }
  }
}

// -- phone navigation ----------------------------------------------------------

function toggleNav(button, open) {
  const nav = document.getElementById(button.getAttribute("aria-controls"));
  button.setAttribute("aria-expanded", open ? "true" : "false");
  if (!nav) return;
  nav.classList.toggle("is-open", open);
  if (button.dataset.lwNavHidden === "1") nav.hidden = !open;
}

/** Make `button.lw-nav-toggle` open and close the navigation it controls. */
export function initNavToggle(root = document) {
  for (const button of root.querySelectorAll("button.lw-nav-toggle[aria-controls]")) {
    if (ready.has(button)) continue;
    ready.add(button);
    const nav = document.getElementById(button.getAttribute("aria-controls"));
    if (!nav) continue;
    if (nav.hidden) button.dataset.lwNavHidden = "1";
    const isOpen = () => button.getAttribute("aria-expanded") === "true";
    button.addEventListener("click", () => toggleNav(button, !isOpen()));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && isOpen()) {
        toggleNav(button, false);
        button.focus();
      }
    });
    document.addEventListener("click", (event) => {
      if (isOpen() && !nav.contains(event.target) && !button.contains(event.target)) toggleNav(button, false);
    });
  }
}

/** The browser's time zone (an IANA name), or null where the browser does not say. */
export function browserTimeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || null;
  } catch (exc) {
    return null;
  }
}

let zoneSent = false;

/**
 * The browser's time zone into sign-in forms (`input[data-lw-time-zone]`), and once to
 * the server for a signed-in user who has none (`<html data-lw-save-time-zone=URL>`):
 * the server stores it only while the user has none, so a zone chosen in Profile wins.
 */
export function initTimeZone(root = document) {
  const zone = browserTimeZone();
  if (!zone) return;
  for (const input of root.querySelectorAll("input[data-lw-time-zone]")) input.value = zone;
  const url = document.documentElement.dataset.lwSaveTimeZone;
  const csrf = document.querySelector('meta[name="lw-csrf"]');
  if (!url || !csrf || zoneSent) return;
  zoneSent = true;
  fetch(url, {
    method: "POST", credentials: "same-origin", body: new URLSearchParams({ time_zone: zone }),
    headers: { "X-CSRF-Token": csrf.content, Accept: "application/json" },
  }).catch((exc) => console.warn("lw-ui: the time zone was not sent", exc));
}

/** Everything above, for the page or a fragment added to it. */
export function initUI(root = document) {
  initTabs(root);
  initCollapsibles(root);
  initNavToggle(root);
  initTimeZone(root);
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", () => initUI());
} else {
  initUI();
}
