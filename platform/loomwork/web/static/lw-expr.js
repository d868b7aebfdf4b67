/**
 * Loomwork expressions in the browser: an interpreter of the typed JSON tree.
 *
 * The server parses and type-checks an expression (runtime/expr) and ships its
 * typed tree (every node carries `ty`) to generated forms, which evaluate
 * visible_if / required_if / read_only_if and dependent choices as the user
 * types. The Python back end (runtime/expr/python.py) is the reference: this
 * module gives the same value for every tree and environment, NULLs included,
 * and tests/test_expr_js.py holds it to that. The server stays authoritative: a
 * rule shown here is enforced again on every write.
 *
 *   import { compile, evaluate, EvaluationError, UnsupportedError } from "./lw-expr.js";
 *   const visible = compile(tree);                // throws UnsupportedError
 *   visible({rec: {stage: "won"}, old: null});    // -> true | false | null
 *
 * Environment (plain JSON, the same as the server sends):
 *   {rec: {field: value}, old: {...} | null, paths: {"account.industry": value},
 *    user_id: int | null, user_role: str | null,
 *    now: "2026-11-22T10:00:00Z", today: "2026-11-22"}
 * Values: text and choices as strings; numbers and decimals as numbers (decimals
 * may also be strings such as "10.50"); booleans; dates "YYYY-MM-DD"; datetimes
 * ISO 8601 with an offset or Z (without one they are read as UTC); multi-choice
 * as a list of strings; null. A value that does not parse as its field's type
 * (a half-typed date, "12a" in a number box, a decimal beyond 1e±1000) reads as NULL. `today` defaults to
 * the UTC date of `now`, `now` to the clock.
 *
 * Results: null, booleans, numbers (decimals too), text, dates "YYYY-MM-DD",
 * datetimes "YYYY-MM-DDTHH:MM:SSZ" (UTC, whole seconds), lists of strings.
 *
 * How the Python semantics are reproduced:
 * - NULL is null with SQL's three-valued logic; `x if c else y` takes y unless c
 *   is exactly true; operands and non-NULL-aware arguments are evaluated left to
 *   right and evaluation stops at the first NULL, as in Python (so a NULL
 *   operand hides a cap that the other operand would hit); NULL-aware functions
 *   (concat, coalesce, is_blank) see every argument; case() evaluates only the
 *   subject, the matches up to the first equal one and the chosen result.
 * - Text is counted in code points, as Python counts (len("𝄞") == 1): len,
 *   substr, the text caps, ordering of text (code point order, not UTF-16's),
 *   and contains/starts_with never match half of a surrogate pair. Lone
 *   surrogates (not Unicode text; the database cannot store them) count as one
 *   character each, as in Python, but two that meet in + or concat() pair up.
 * - decimal values are exact: BigInt coefficient and power of ten, with Python's
 *   default decimal context (28 significant digits, half-even) for + - * / and
 *   unary minus, abs; round() is half away from zero via quantize, failing like
 *   Python when the result needs more than 28 digits. A number mixed with a
 *   decimal is converted through its shortest repr, as Python's Decimal(repr(x)).
 * - number values are IEEE doubles. Python tells int from float, JSON does not:
 *   here a number with an integral value below 2**63 behaves as a Python int
 *   (round(x, n >= 0) returns it unchanged, + - * of two of them fails at 2**63)
 *   and any other number as a float (fails beyond 1e300). Results agree to
 *   double precision; integers beyond 2**53 are approximate.
 * - Caps raise EvaluationError where Python raises it: text results over
 *   100,000 code points, regex input over 100,000, |exponent| > 1000, numbers
 *   out of range, decimals of 1e18 or more, dates outside the years 1 to 9999,
 *   fractional day/month counts.
 * - Datetimes are held as UTC text "YYYY-MM-DDTHH:MM:SS.ffffffZ" (microseconds,
 *   as Python), so they compare as text; dates as "YYYY-MM-DD".
 *
 * Known differences (documented, not bugs to chase):
 * - regex_match uses the browser's RegExp with the 'u' flag, after translating
 *   RE2 syntax: (?P<name>...) (a plain group: only whether it matches counts),
 *   \A \z \Q...\E \x{...} \a, octal escapes, \pL and \p{Greek} (scripts become
 *   \p{Script=...}), negated classes as [^\p{..}] (which JS case-folds as RE2
 *   does, unlike \P{..}), POSIX classes [[:alpha:]], RE2's \s (no \v), '.' and
 *   ^/$ under (?m)/(?s) (RE2 breaks lines at \n only), and stray { } ] and
 *   escaped punctuation that JS's 'u' mode rejects. (?U) is dropped (it changes
 *   which match, never whether). Under (?i), JS's \b and \B count ſ (U+017F)
 *   and K (U+212A) as word characters, RE2's do not. Not translatable, so
 *   compile() throws UnsupportedError: (?i) anywhere but the start of the
 *   pattern, \C, and anything the browser's RegExp then rejects. Unicode
 *   classes and case folding use the browser's Unicode tables, which may be
 *   newer than RE2's. The browser's engine backtracks: a pathological pattern
 *   such as (a+)+$ can be slow on long input, where RE2 is linear.
 * - upper()/lower() use the browser's Unicode tables; for characters whose case
 *   mapping is newer than the server's Python (Unicode 14 on Python 3.11) the
 *   results differ.
 * - changed("f") compares old and new values by the field's type, which the
 *   tree does not carry on `changed` nodes: it is taken from `fty` on the node
 *   when present, else from another use of the field in the same tree, else
 *   guessed from the values (numbers and numeric strings compare as numbers,
 *   ISO datetimes with offsets as instants, everything else exactly).
 * - Plugin functions have no browser implementation: compile() throws
 *   UnsupportedError for them, and the form leaves the rule to the server.
 * - Where the Python back end is inconsistent with itself (a number branch of
 *   a decimal `if` compared unconverted, add_months on a datetime's local
 *   fields...; the KNOWN cases of tests/test_expr_js.py), this module follows
 *   the consistent rule.
 *
 * No dependencies, no build step; needs BigInt, Unicode property escapes and
 * lookbehind (evergreen browsers; Safari 16.4+; Node 12+).
 */

/** Caps shared with the Python back end (runtime/expr). */
export const LIMITS = Object.freeze({
  maxTextResult: 100000,
  maxRegexInput: 100000,
  maxNumber: 1e300,
  maxExponent: 1000,
  maxInteger: 2 ** 63,
  maxDecimal: 1e18,
  decimalDigits: 28,
  maxDayCount: 3660000,
});

/** A cap hit while evaluating; the Python back end raises its own EvaluationError there. */
export class EvaluationError extends Error {
  constructor(message) {
    super(message);
    this.name = "EvaluationError";
  }
}

/** A tree this interpreter cannot run (a plugin function, an untranslatable regex). */
export class UnsupportedError extends Error {
  constructor(message) {
    super(message);
    this.name = "UnsupportedError";
  }
}

const hasOwn = (obj, key) => obj != null && Object.prototype.hasOwnProperty.call(obj, key);
const own = (obj, key) => (hasOwn(obj, key) && obj[key] !== undefined ? obj[key] : null);
const outOfRange = () => new EvaluationError("number out of range");

// -- exact decimals ---------------------------------------------------------

const POW10 = Array.from({ length: 64 }, (_, i) => 10n ** BigInt(i));
const pow10 = (n) => (n < 64 ? POW10[n] : 10n ** BigInt(n));
/** Largest |exponent| read from the wire: 1e999999 typed into a form must not build huge BigInts. */
const MAX_WIRE_EXPONENT = 1000;
const digitCount = (c) => (c < 0n ? -c : c).toString().length;
const DECIMAL_RE = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/** An exact decimal c * 10**e (c a BigInt), with Python's default context for arithmetic. */
class Dec {
  constructor(c, e) {
    this.c = c;
    this.e = e;
  }

  /** Parse "10.50", "-1e+21", ".5"; null if it is not a finite decimal. */
  static parse(text) {
    const m = DECIMAL_RE.exec(String(text).trim());
    if (!m || (m[2] === "" && !m[3])) return null;
    const frac = m[3] || "";
    const exp = m[4] ? Number(m[4]) : 0;
    if (!Number.isSafeInteger(exp) || Math.abs(exp - frac.length) > MAX_WIRE_EXPONENT) return null;
    let c = BigInt((m[2] || "0") + frac);
    if (m[1] === "-") c = -c;
    return new Dec(c, exp - frac.length);
  }

  /** As Python's Decimal(repr(x)): JS and Python both print the shortest round-trip digits. */
  static fromNumber(x) {
    if (!Number.isFinite(x)) throw outOfRange();
    return Dec.parse(String(x));
  }

  /** Rounded to 28 significant digits, half to even; `sticky` marks a nonzero tail already cut. */
  static rounded(c, e, sticky = false) {
    const neg = c < 0n;
    const a = neg ? -c : c;
    const n = digitCount(a);
    if (n <= LIMITS.decimalDigits && !sticky) return new Dec(c, e);
    const drop = n - LIMITS.decimalDigits;
    if (drop <= 0) return new Dec(c, e); // only division sets sticky, and it keeps > 28 digits
    const p = pow10(drop);
    let q = a / p;
    const r = a % p;
    const half = p / 2n;
    if (r > half || (r === half && (sticky || q % 2n === 1n))) q += 1n;
    return new Dec(neg ? -q : q, e + drop);
  }

  static align(x, y) {
    const e = Math.min(x.e, y.e);
    return [x.c * pow10(x.e - e), y.c * pow10(y.e - e), e];
  }

  add(y) {
    const [a, b, e] = Dec.align(this, y);
    return Dec.rounded(a + b, e);
  }

  sub(y) {
    const [a, b, e] = Dec.align(this, y);
    return Dec.rounded(a - b, e);
  }

  mul(y) {
    return Dec.rounded(this.c * y.c, this.e + y.e);
  }

  /** The quotient to 28 digits; null when dividing by zero (SQL's x / 0). */
  div(y) {
    if (y.c === 0n) return null;
    const neg = (this.c < 0n) !== (y.c < 0n);
    const a = this.c < 0n ? -this.c : this.c;
    const b = y.c < 0n ? -y.c : y.c;
    if (a === 0n) return new Dec(0n, 0);
    // Scale so the integer quotient has at least 30 digits, then round with the remainder as sticky.
    const k = Math.max(0, 30 + digitCount(b) - digitCount(a));
    const n = a * pow10(k);
    const q = n / b;
    const r = n % b;
    return Dec.rounded(neg ? -q : q, this.e - y.e - k, r !== 0n);
  }

  neg() {
    return Dec.rounded(-this.c, this.e);
  }

  abs() {
    return Dec.rounded(this.c < 0n ? -this.c : this.c, this.e);
  }

  cmp(y) {
    const [a, b] = Dec.align(this, y);
    return a < b ? -1 : a > b ? 1 : 0;
  }

  /** Python's quantize(Decimal(10) ** exp, ROUND_HALF_UP). */
  quantizeHalfUp(exp, fn) {
    let c;
    if (this.e >= exp) {
      c = this.c * pow10(this.e - exp);
    } else {
      const p = pow10(exp - this.e);
      const a = this.c < 0n ? -this.c : this.c;
      let q = a / p;
      if ((a % p) * 2n >= p) q += 1n;
      c = this.c < 0n ? -q : q;
    }
    if (digitCount(c) > LIMITS.decimalDigits) {
      throw new EvaluationError(`${fn}(): the result needs more than ${LIMITS.decimalDigits} digits`);
    }
    return new Dec(c, exp);
  }

  /** The integer toward -infinity (up = false) or +infinity (up = true), as a BigInt. */
  integral(up) {
    if (this.e >= 0) return this.c * pow10(this.e);
    const p = pow10(-this.e);
    let q = this.c / p; // truncates toward zero
    const r = this.c % p;
    if (r !== 0n && (r > 0n) === up) q += up ? 1n : -1n;
    return q;
  }

  toNumber() {
    return Number(`${this.c}e${this.e}`);
  }

  toString() {
    return `${this.c}e${this.e}`;
  }
}

const DECIMAL_CAP = new Dec(1n, 18);
const INT_CAP_BIG = 2n ** 63n;
const toDec = (v) => (v instanceof Dec ? v : Dec.fromNumber(v));
const toNum = (v) => (v instanceof Dec ? v.toNumber() : v);

/** Python's _checked() on a Decimal: exact, so 999999999999999999.99999999999 passes. */
function checkDec(d) {
  if ((d.c < 0n ? new Dec(-d.c, d.e) : d).cmp(DECIMAL_CAP) >= 0) throw outOfRange();
  return d;
}

// -- numbers (Python int / float) --------------------------------------------

/** Whether a JS number stands for a Python int (see the module header). */
const isInt = (x) => Number.isInteger(x) && Math.abs(x) < LIMITS.maxInteger;

function checkFloat(x) {
  if (!Number.isFinite(x) || Math.abs(x) > LIMITS.maxNumber) throw outOfRange();
  return x;
}

function checkInt(x) {
  if (!(Math.abs(x) < LIMITS.maxInteger)) throw outOfRange();
  return x;
}

function checkBigInt(n) {
  if ((n < 0n ? -n : n) >= INT_CAP_BIG) throw outOfRange();
  return Number(n);
}

/** Python's _checked() on a function's result. */
function checkResult(v) {
  if (typeof v === "number") return isInt(v) ? v : checkFloat(v);
  if (v instanceof Dec) return checkDec(v);
  return v;
}

// -- text in code points -------------------------------------------------------

const SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /\p{Cs}/u;
const isHigh = (u) => u >= 0xd800 && u <= 0xdbff;
const isLow = (u) => u >= 0xdc00 && u <= 0xdfff;

function cpLength(s) {
  if (!SURROGATE.test(s)) return s.length;
  let n = 0;
  for (const _ of s) n += 1;
  return n;
}

/** Code point order (Python's), not UTF-16's: U+FF5E sorts before U+1D11E. */
function compareText(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i += 1;
  if (i > 0 && isHigh(a.charCodeAt(i - 1)) && (isLow(a.charCodeAt(i)) || isLow(b.charCodeAt(i)))) i -= 1;
  const x = a.codePointAt(i);
  const y = b.codePointAt(i);
  if (x === undefined) return -1;
  if (y === undefined) return 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

const splitsPair = (s, i) => i > 0 && i < s.length && isHigh(s.charCodeAt(i - 1)) && isLow(s.charCodeAt(i));

function textIncludes(haystack, needle) {
  if (!SURROGATE.test(needle)) return haystack.includes(needle);
  for (let i = haystack.indexOf(needle); i !== -1; i = haystack.indexOf(needle, i + 1)) {
    if (!splitsPair(haystack, i) && !splitsPair(haystack, i + needle.length)) return true;
  }
  return false;
}

function textStartsWith(text, prefix) {
  return text.startsWith(prefix) && !(SURROGATE.test(prefix) && splitsPair(text, prefix.length));
}

function substr(text, start, length) {
  const begin = Math.max(Math.trunc(start), 1) - 1;
  const end = length === undefined ? undefined : begin + Math.max(Math.trunc(length), 0);
  if (!SURROGATE.test(text)) return text.slice(begin, end);
  return Array.from(text).slice(begin, end).join("");
}

const BLANK = " \t\r\n";
function trim(text) {
  let i = 0;
  let j = text.length;
  while (i < j && BLANK.includes(text[i])) i += 1;
  while (j > i && BLANK.includes(text[j - 1])) j -= 1;
  return text.slice(i, j);
}

function checkTextLength(text, what) {
  if (text.length > LIMITS.maxTextResult && cpLength(text) > LIMITS.maxTextResult) {
    throw new EvaluationError(`${what} would make text longer than ${LIMITS.maxTextResult} characters`);
  }
  return text;
}

// -- dates -------------------------------------------------------------------

const pad = (n, w) => String(n).padStart(w, "0");

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
function daysFromCivil(y, m, d) {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1;
  return era * 146097 + yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy - 719468;
}

function civilFromDays(days) {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

const isLeap = (y) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
const monthLength = (y, m) => (m === 2 ? (isLeap(y) ? 29 : 28) : [31, 0, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]);
const MIN_DAY = daysFromCivil(1, 1, 1);
const MAX_DAY = daysFromCivil(9999, 12, 31);
const DAY_US = 86400000000;

function formatDay(days) {
  const [y, m, d] = civilFromDays(days);
  return `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}`;
}

/** Day number of a valid calendar date, else null. */
function calendarDay(y, m, d) {
  if (y < 1 || y > 9999 || m < 1 || m > 12 || d < 1 || d > monthLength(y, m)) return null;
  return daysFromCivil(y, m, d);
}

/** Day number of an ISO week date (Python's date.fromisocalendar), else null. */
function isoWeekDay(y, w, wd) {
  if (y < 1 || y > 9999 || w < 1 || wd < 1 || wd > 7) return null;
  const jan4 = daysFromCivil(y, 1, 4);
  const week1 = jan4 - (isoWeekday(jan4) - 1);
  const jan1 = isoWeekday(daysFromCivil(y, 1, 1));
  const weeks = jan1 === 4 || (jan1 === 3 && isLeap(y)) ? 53 : 52;
  if (w > weeks) return null;
  const day = week1 + (w - 1) * 7 + (wd - 1);
  return day >= MIN_DAY && day <= MAX_DAY ? day : null;
}

const isoWeekday = (days) => ((((days + 3) % 7) + 7) % 7) + 1;

const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$|^(\d{4})-W(\d{2})-(\d)$/;

/** "YYYY-MM-DD" (or the 10-character week date Python's date() accepts) to a day number, else null. */
function parseDate(text) {
  const m = DATE_RE.exec(text);
  if (!m) return null;
  return m[1] ? calendarDay(+m[1], +m[2], +m[3]) : isoWeekDay(+m[4], +m[5], +m[6]);
}

// The subset of ISO 8601 that Python 3.11's datetime.fromisoformat reads: extended or
// basic calendar and week dates, any one-character separator, hh[:mm[:ss]] with an
// optional fraction, offsets Z / ±hh[:mm[:ss[.ffffff]]].
const DATETIME_RE = new RegExp(
  "^(\\d{4})(?:-(\\d{2})-(\\d{2})|(\\d{2})(\\d{2})|-W(\\d{2})(?:-(\\d))?|W(\\d{2})(\\d)?)" +
    "(?:.(\\d{2})(?::?(\\d{2})(?::?(\\d{2}))?)?(?:[.,](\\d*))?)?" +
    "(?:(Z)|([+-])(\\d{2})(?::?(\\d{2})(?::?(\\d{2}))?)?(?:[.,](\\d+))?)?$",
  "u",
);

const micros = (frac) => (frac ? Number(frac.slice(0, 6).padEnd(6, "0")) : 0);

/** An ISO datetime to [day number, microseconds of the day] in UTC, else null. */
function parseDatetimeParts(text) {
  const m = DATETIME_RE.exec(text);
  if (!m) return null;
  let day;
  if (m[2]) day = calendarDay(+m[1], +m[2], +m[3]);
  else if (m[4]) day = calendarDay(+m[1], +m[4], +m[5]);
  else if (m[6]) day = isoWeekDay(+m[1], +m[6], m[7] ? +m[7] : 1);
  else day = isoWeekDay(+m[1], +m[8], m[9] ? +m[9] : 1);
  if (day === null) return null;
  const h = m[10] ? +m[10] : 0;
  const mi = m[11] ? +m[11] : 0;
  const s = m[12] ? +m[12] : 0;
  if (h > 23 || mi > 59 || s > 59) return null;
  let tod = ((h * 60 + mi) * 60 + s) * 1e6 + micros(m[13]);
  if (m[15]) {
    const oh = +m[16];
    const om = m[17] ? +m[17] : 0;
    const os = m[18] ? +m[18] : 0;
    if (om > 59 || os > 59) return null;
    const off = ((oh * 60 + om) * 60 + os) * 1e6 + micros(m[19]);
    if (off >= DAY_US) return null;
    tod -= m[15] === "-" ? -off : off;
  }
  day += Math.floor(tod / DAY_US);
  tod -= Math.floor(tod / DAY_US) * DAY_US;
  if (day < MIN_DAY || day > MAX_DAY) return null;
  return [day, tod];
}

function formatDatetime(day, tod) {
  const us = tod % 1e6;
  const secs = (tod - us) / 1e6;
  const time = `${pad(Math.floor(secs / 3600), 2)}:${pad(Math.floor(secs / 60) % 60, 2)}:${pad(secs % 60, 2)}`;
  return `${formatDay(day)}T${time}.${pad(us, 6)}Z`;
}

/** An ISO datetime to the canonical "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC), else null. */
function parseDatetime(text) {
  const parts = parseDatetimeParts(text);
  return parts ? formatDatetime(parts[0], parts[1]) : null;
}

/** The UTC day number of a date or canonical datetime. */
const dayOf = (v) => parseDate(v.slice(0, 10));

/** The same time of day on another day; dates stay dates. */
function withDay(v, days, fn) {
  if (days < MIN_DAY || days > MAX_DAY) throw new EvaluationError(`${fn}() goes beyond the years 1 to 9999`);
  return formatDay(days) + v.slice(10);
}

function wholeCount(n, fn) {
  if (!Number.isInteger(n)) throw new EvaluationError(`${fn}() needs a whole number`);
  if (Math.abs(n) > LIMITS.maxDayCount) throw new EvaluationError(`${fn}() goes beyond the years 1 to 9999`);
  return n;
}

function nowCanonical() {
  const ms = Date.now();
  const day = Math.floor(ms / 86400000);
  return formatDatetime(day, (ms - day * 86400000) * 1000);
}

// -- values from the wire ------------------------------------------------------

const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** A JSON value read as type `ty`; what does not parse as that type reads as NULL. */
function fromWire(raw, ty) {
  if (raw === null || raw === undefined) return null;
  switch (ty) {
    case "text":
    case "choice":
      return typeof raw === "string" ? raw : typeof raw === "object" ? null : String(raw);
    case "number":
      if (typeof raw === "number") return Number.isFinite(raw) ? raw : null;
      if (typeof raw === "string" && NUMBER_RE.test(raw.trim())) return Number(raw.trim());
      return null;
    case "decimal":
      if (typeof raw === "number") return Number.isFinite(raw) ? Dec.fromNumber(raw) : null;
      return typeof raw === "string" ? Dec.parse(raw) : null;
    case "boolean":
      return typeof raw === "boolean" ? raw : null;
    case "date":
      return typeof raw === "string" && /^\d{4}-\d{2}-\d{2}$/.test(raw) && parseDate(raw) !== null ? raw : null;
    case "datetime":
      return typeof raw === "string" ? parseDatetime(raw) : null;
    case "list":
      return Array.isArray(raw) ? raw.map(String) : null;
    default:
      return null;
  }
}

/** A value as the caller sees it (see the module header). */
function toPublic(v, ty) {
  if (v === null || v === undefined) return null;
  if (v instanceof Dec) return v.toNumber();
  if (ty === "datetime" && typeof v === "string") return `${v.slice(0, 19)}Z`;
  if (Array.isArray(v)) return v.slice();
  return v;
}

// -- equality and order by type --------------------------------------------------

function listEquals(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Python's == between two non-NULL values of one family. */
function equals(a, b) {
  if (a instanceof Dec || b instanceof Dec) return toDec(a).cmp(toDec(b)) === 0;
  if (Array.isArray(a) && Array.isArray(b)) return listEquals(a, b);
  return a === b;
}

/** A comparator for values of type `ty`. */
function comparator(ty) {
  if (ty === "decimal") return (a, b) => toDec(a).cmp(toDec(b));
  if (ty === "number") return (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return compareText; // text, choice; dates and canonical datetimes are ASCII
}

// -- regular expressions: RE2 syntax to a JS RegExp --------------------------------

const POSIX_CLASSES = {
  alnum: "0-9A-Za-z", alpha: "A-Za-z", ascii: "\\x00-\\x7F", blank: "\\t ", cntrl: "\\x00-\\x1F\\x7F",
  digit: "0-9", graph: "!-~", lower: "a-z", print: " -~", punct: "!-\\/:-@\\[-`{-~",
  space: "\\t\\n\\v\\f\\r ", upper: "A-Z", word: "0-9A-Za-z_", xdigit: "0-9A-Fa-f",
};
const RE2_SPACE = "\\t\\n\\f\\r ";
const JS_SYNTAX = "^$\\.*+?()[]{}|/";
const CATEGORY = /^(?:[CLMNPSZ][a-z]?|Any)$/;
const SIMPLE_ESCAPES = { a: "\\x07", f: "\\f", n: "\\n", r: "\\r", t: "\\t", v: "\\v" };

const codeEscape = (cp) => `\\u{${cp.toString(16)}}`;

function literalEscape(ch, inClass) {
  if (JS_SYNTAX.includes(ch) || (inClass && ch === "-")) return `\\${ch}`;
  return ch;
}

class RegexTranslator {
  constructor(src) {
    this.src = src;
    this.i = 0;
    this.ignoreCase = false;
  }

  fail(why) {
    return new UnsupportedError(`regex_match(): ${why} is not supported in the browser`);
  }

  /** The escape at this.i (just after the backslash): [JS text, is a set (\d, \p..), negated \P in a class]. */
  escape(inClass) {
    const s = this.src;
    const c = s[this.i];
    this.i += 1;
    if (c === undefined) throw this.fail("a trailing backslash");
    if ("dDwW".includes(c)) return [`\\${c}`, true];
    if (c === "s") return [inClass ? RE2_SPACE : `[${RE2_SPACE}]`, true];
    if (c === "S") return [inClass ? null : `[^${RE2_SPACE}]`, true]; // null: the class rewrites it
    if (c === "p" || c === "P") {
      // Under (?i) RE2 folds a class before negating it; JS folds \P{..} after, but
      // folds an inverted class [^\p{..}] as RE2 does. In a class, see charClass().
      const [prop, negated] = this.unicodeClass(c === "P");
      if (inClass) return [prop, true, negated];
      return [negated ? `[^${prop}]` : prop, true];
    }
    if (c === "x") {
      if (s[this.i] === "{") {
        const end = s.indexOf("}", this.i);
        const cp = parseInt(s.slice(this.i + 1, end), 16);
        this.i = end + 1;
        return [codeEscape(cp), false];
      }
      const cp = parseInt(s.slice(this.i, this.i + 2), 16);
      this.i += 2;
      return [codeEscape(cp), false];
    }
    if (c >= "0" && c <= "7") {
      let j = this.i;
      while (j < s.length && j < this.i + 2 && s[j] >= "0" && s[j] <= "7") j += 1;
      const cp = parseInt(c + s.slice(this.i, j), 8);
      this.i = j;
      return [codeEscape(cp), false];
    }
    if (SIMPLE_ESCAPES[c]) return [SIMPLE_ESCAPES[c], false];
    if (!inClass && c === "A") return ["^", false]; // the JS 'm' flag is never set
    if (!inClass && c === "z") return ["$", false];
    if (!inClass && (c === "b" || c === "B")) return [`\\${c}`, false];
    if (c === "Q") {
      const end = s.indexOf("\\E", this.i);
      const text = end === -1 ? s.slice(this.i) : s.slice(this.i, end);
      this.i = end === -1 ? s.length : end + 2;
      return [Array.from(text, (ch) => literalEscape(ch, inClass)).join(""), false];
    }
    if (/[A-Za-z0-9]/.test(c) || c.charCodeAt(0) >= 0x80) throw this.fail(`\\${c}`);
    return [literalEscape(c, inClass), false];
  }

  unicodeClass(negated) {
    const s = this.src;
    let name;
    if (s[this.i] === "{") {
      const end = s.indexOf("}", this.i);
      name = s.slice(this.i + 1, end);
      this.i = end + 1;
    } else {
      name = s[this.i];
      this.i += 1;
    }
    if (name.startsWith("^")) {
      negated = !negated;
      name = name.slice(1);
    }
    return [`\\p{${CATEGORY.test(name) ? name : `Script=${name}`}}`, negated];
  }

  /** A bracket class at this.i (just after '['). */
  charClass() {
    const s = this.src;
    let negated = false;
    if (s[this.i] === "^") {
      negated = true;
      this.i += 1;
    }
    const items = [];
    const complements = []; // class contents whose complement is a member (\S, [:^alpha:])
    let first = true;
    let prevSet = false;
    for (;;) {
      if (this.i >= s.length) throw this.fail("an unterminated class");
      const ch = s[this.i];
      if (ch === "]" && !first) {
        this.i += 1;
        break;
      }
      first = false;
      if (ch === "[" && s[this.i + 1] === ":") {
        const end = s.indexOf(":]", this.i + 2);
        let name = s.slice(this.i + 2, end);
        this.i = end + 2;
        const neg = name.startsWith("^");
        if (neg) name = name.slice(1);
        if (!hasOwn(POSIX_CLASSES, name)) throw this.fail(`[:${name}:]`);
        (neg ? complements : items).push(POSIX_CLASSES[name]);
        prevSet = true;
      } else if (ch === "\\") {
        this.i += 1;
        const isS = s[this.i] === "S";
        const [text, isSet, negated] = this.escape(true);
        if (isS) complements.push(RE2_SPACE);
        else (negated ? complements : items).push(text);
        prevSet = isSet;
      } else if (ch === "-") {
        // RE2 reads '-' next to a set (\d-z) as a literal; JS's 'u' mode rejects it unescaped.
        const next = s.slice(this.i + 1, this.i + 3);
        const nextSet = /^\\[dDwWsSpP]|^\[:/.test(next);
        items.push(prevSet || nextSet ? "\\-" : "-");
        this.i += 1;
        prevSet = false;
      } else {
        const cp = s.codePointAt(this.i);
        const text = String.fromCodePoint(cp);
        this.i += text.length;
        items.push(text === "[" || text === "]" || text === "\\" ? `\\${text}` : text);
        prevSet = false;
      }
    }
    const plain = items.join("");
    if (!complements.length) return `[${negated ? "^" : ""}${plain}]`;
    if (!negated) {
      // Any of: the plain members, or anything outside each complement.
      const alts = complements.map((c) => `[^${c}]`);
      if (plain) alts.unshift(`[${plain}]`);
      return `(?:${alts.join("|")})`;
    }
    // None of the plain members, and inside every complement.
    const look = complements.slice(0, -1).map((c) => `(?=[${c}])`).join("");
    return `(?:${plain ? `(?![${plain}])` : ""}${look}[${complements[complements.length - 1]}])`;
  }

  /** Flags after "(?": returns [flag changes, ends with ':' (a group)]. */
  flags() {
    const s = this.src;
    const m = /^([imsU]*)(?:-([imsU]*))?([:)])/.exec(s.slice(this.i));
    if (!m) throw this.fail("this group syntax");
    this.i += m[0].length;
    const on = m[1];
    const off = m[2] || "";
    return [on, off, m[3] === ":"];
  }

  translate() {
    const s = this.src;
    const states = [{ s: false, m: false }];
    let out = "";
    const top = () => states[states.length - 1];
    const apply = (state, on, off, atStart) => {
      const next = { ...state };
      for (const f of on) if (f === "s" || f === "m") next[f] = true;
      for (const f of off) if (f === "s" || f === "m") next[f] = false;
      if (on.includes("i") && !this.ignoreCase) {
        if (!atStart) throw this.fail("(?i) after the start of the pattern");
        this.ignoreCase = true;
      }
      if (off.includes("i") && this.ignoreCase) throw this.fail("(?-i)");
      return next;
    };
    while (this.i < s.length) {
      const ch = s[this.i];
      if (ch === "\\") {
        this.i += 1;
        out += this.escape(false)[0];
      } else if (ch === "[") {
        this.i += 1;
        out += this.charClass();
      } else if (ch === "(") {
        if (s.startsWith("(?P<", this.i) || (s.startsWith("(?<", this.i) && !"=!".includes(s[this.i + 3]))) {
          // Only whether it matches counts: a plain group (RE2 allows names JS refuses, and duplicates).
          this.i = s.indexOf(">", this.i) + 1;
          out += "(";
          states.push({ ...top() });
        } else if (s.startsWith("(?", this.i)) {
          this.i += 2;
          const atStart = out === "" && states.length === 1;
          const [on, off, group] = this.flags();
          if (group) {
            states.push(apply(top(), on, off, false));
            out += "(?:";
          } else {
            states[states.length - 1] = apply(top(), on, off, atStart);
          }
        } else {
          this.i += 1;
          out += "(";
          states.push({ ...top() });
        }
      } else if (ch === ")") {
        this.i += 1;
        if (states.length > 1) states.pop();
        out += ")";
      } else if (ch === ".") {
        this.i += 1;
        out += top().s ? "[\\s\\S]" : "[^\\n]"; // RE2 and JS disagree on \r, U+2028 for '.'
      } else if (ch === "^") {
        this.i += 1;
        out += top().m ? "(?<![^\\n])" : "^";
      } else if (ch === "$") {
        this.i += 1;
        out += top().m ? "(?![^\\n])" : "$";
      } else if (ch === "{") {
        const m = /^\{\d+(?:,\d*)?\}/.exec(s.slice(this.i));
        out += m ? m[0] : "\\{"; // RE2 reads a brace that is not a repetition literally
        this.i += m ? m[0].length : 1;
      } else if (ch === "}" || ch === "]") {
        this.i += 1;
        out += `\\${ch}`;
      } else {
        const text = String.fromCodePoint(s.codePointAt(this.i));
        this.i += text.length;
        out += text;
      }
    }
    return out;
  }
}

/** RE2 pattern to a JS RegExp with the 'u' flag. :throws UnsupportedError: */
export function translateRegex(pattern) {
  const t = new RegexTranslator(pattern);
  const source = t.translate();
  try {
    return new RegExp(source, t.ignoreCase ? "iu" : "u");
  } catch (exc) {
    throw new UnsupportedError(`regex_match(): the browser cannot run this pattern (${exc.message})`);
  }
}

// -- the function library ---------------------------------------------------------

function roundValue(x, digits = 0) {
  const n = Math.trunc(digits);
  if (!(n >= -18 && n <= 18)) throw new EvaluationError("round() takes -18 to 18 digits");
  if (x instanceof Dec) return x.quantizeHalfUp(-n, "round");
  if (isInt(x) && n >= 0) return x;
  const q = Dec.fromNumber(x).quantizeHalfUp(-n, "round");
  return n > 0 ? q.toNumber() : checkBigInt(q.integral(false));
}

function floorCeil(up) {
  return (x) => (x instanceof Dec ? checkBigInt(x.integral(up)) : checkInt(up ? Math.ceil(x) : Math.floor(x)));
}

function minMax(sign) {
  return (args, node) => {
    // Python converts every argument to Decimal before picking, so a number wins as a decimal.
    const values = node.ty === "decimal" ? args.map(toDec) : args;
    const cmp = comparator(node.ty);
    let best = values[0];
    for (const v of values.slice(1)) if (cmp(v, best) * sign > 0) best = v;
    return best;
  };
}

function literalDate(text) {
  const day = text.length === 10 ? parseDate(text) : null;
  if (day === null) throw new EvaluationError(`date(): ${JSON.stringify(text)} is not a date (YYYY-MM-DD)`);
  return formatDay(day);
}

function literalDatetime(text) {
  const m = DATETIME_RE.exec(text);
  const value = m && (m[14] || m[15]) ? parseDatetime(text) : null;
  if (value === null) throw new EvaluationError(`datetime(): ${JSON.stringify(text)} is not a datetime with an offset`);
  return value;
}

function addMonths(v, months) {
  const n = wholeCount(months, "add_months");
  const [y, m, d] = civilFromDays(dayOf(v));
  const total = y * 12 + (m - 1) + n;
  const year = Math.floor(total / 12);
  const month = total - year * 12 + 1;
  if (year < 1 || year > 9999) throw new EvaluationError("add_months() goes beyond the years 1 to 9999");
  return withDay(v, daysFromCivil(year, month, Math.min(d, monthLength(year, month))), "add_months");
}

function regexMatch(text, re) {
  if (text.length > LIMITS.maxRegexInput && cpLength(text) > LIMITS.maxRegexInput) {
    throw new EvaluationError(`regex_match() looks at most ${LIMITS.maxRegexInput} characters`);
  }
  // RE2 reads UTF-8, which cannot hold a lone surrogate: Python fails there too.
  if (LONE_SURROGATE.test(text)) throw new EvaluationError("regex_match(): text with a lone surrogate");
  return re.test(text);
}

/**
 * The built-ins: name -> {fn(args, node, env), nullAware}. `args` are evaluated values;
 * unless nullAware, a NULL argument makes the result NULL without calling fn.
 */
const FUNCTIONS = {
  round: { fn: ([x, digits]) => roundValue(x, digits) },
  abs: { fn: ([x]) => (x instanceof Dec ? x.abs() : Math.abs(x)) },
  floor: { fn: ([x]) => floorCeil(false)(x) },
  ceil: { fn: ([x]) => floorCeil(true)(x) },
  min: { fn: minMax(-1) },
  max: { fn: minMax(1) },
  len: { fn: ([x]) => (Array.isArray(x) ? x.length : cpLength(x)) },
  upper: { fn: ([x]) => x.toUpperCase() },
  lower: { fn: ([x]) => x.toLowerCase() },
  trim: { fn: ([x]) => trim(x) },
  concat: { nullAware: true, fn: (args) => checkTextLength(args.filter((a) => a !== null).join(""), "concat()") },
  contains: { fn: ([h, n]) => (Array.isArray(h) ? h.includes(n) : textIncludes(h, n)) },
  starts_with: { fn: ([t, p]) => textStartsWith(t, p) },
  substr: { fn: ([t, start, length]) => substr(t, start, length) },
  regex_match: { fn: ([t, pattern], node) => regexMatch(t, node.regex || translateRegex(pattern)) },
  today: { fn: (args, node, env) => env.today },
  now: { fn: (args, node, env) => env.now },
  date: { fn: ([text]) => literalDate(text) },
  datetime: { fn: ([text]) => literalDatetime(text) },
  date_diff: { fn: ([a, b]) => dayOf(b) - dayOf(a) },
  add_days: { fn: ([v, n]) => withDay(v, dayOf(v) + wholeCount(n, "add_days"), "add_days") },
  add_months: { fn: ([v, n]) => addMonths(v, n) },
  year: { fn: ([v]) => +v.slice(0, 4) },
  month: { fn: ([v]) => +v.slice(5, 7) },
  weekday: { fn: ([v]) => isoWeekday(dayOf(v)) },
  coalesce: { nullAware: true, fn: (args) => args.find((a) => a !== null) ?? null },
  is_blank: { nullAware: true, fn: ([v]) => v === null || v === "" || (Array.isArray(v) && v.length === 0) },
  case: { nullAware: true, fn: null }, // compiled lazily by Compiler._case
};

/** The built-in function names this interpreter runs. */
export const FUNCTION_NAMES = Object.freeze(Object.keys(FUNCTIONS));

// -- the compiler: typed tree to closures -----------------------------------------

const CMP = {
  "==": (c) => c === 0, "!=": (c) => c !== 0, "<": (c) => c < 0,
  "<=": (c) => c <= 0, ">": (c) => c > 0, ">=": (c) => c >= 0,
};

function arithmetic(op, ty) {
  if (ty === "text") {
    if (op === "+") return (a, b) => checkTextLength(a + b, "'+'");
    return (a, b) => {
      const n = Math.max(Math.trunc(b), 0);
      if (a === "") return "";
      if (cpLength(a) * n > LIMITS.maxTextResult) {
        throw new EvaluationError(`repeating text beyond ${LIMITS.maxTextResult} characters`);
      }
      return a.repeat(n);
    };
  }
  if (op === "**") {
    return (a, b) => {
      const x = toNum(a);
      const y = toNum(b);
      if (Math.abs(y) > LIMITS.maxExponent) throw new EvaluationError(`exponent beyond ${LIMITS.maxExponent}`);
      return checkFloat(x ** y); // NaN (negative ** fraction) and Infinity (0 ** -1) fail as in Python
    };
  }
  if (ty === "decimal") {
    return (a, b) => {
      const x = toDec(a);
      const y = toDec(b);
      if (op === "/") {
        const q = x.div(y);
        return q === null ? null : checkDec(q);
      }
      return checkDec(op === "+" ? x.add(y) : op === "-" ? x.sub(y) : x.mul(y));
    };
  }
  return (a, b) => {
    if (op === "/") return b === 0 ? null : checkFloat(a / b);
    const r = op === "+" ? a + b : op === "-" ? a - b : a * b;
    return isInt(a) && isInt(b) ? checkInt(r) : checkFloat(r);
  };
}

/** Values of a field whose type is unknown: a best guess at Python's `!=` (see the header). */
function guessedDiffer(a, b) {
  if (a === null || b === null) return a !== b;
  if (Array.isArray(a) && Array.isArray(b)) return !listEquals(a, b);
  if (typeof a === "number" && typeof b === "number") return a !== b;
  const numeric = (v) => typeof v === "number" || (typeof v === "string" && NUMBER_RE.test(v.trim()));
  if (numeric(a) && numeric(b) && (typeof a === "number" || typeof b === "number" || a !== b)) {
    const x = fromWire(a, "decimal");
    const y = fromWire(b, "decimal");
    return x === null || y === null ? a !== b : x.cmp(y) !== 0;
  }
  if (typeof a === "string" && typeof b === "string" && a !== b) {
    const withOffset = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*(Z|[+-]\d{2}:?\d{2})$/;
    if (withOffset.test(a) && withOffset.test(b)) {
      const x = parseDatetime(a);
      const y = parseDatetime(b);
      if (x !== null && y !== null) return x !== y;
    }
  }
  return a !== b;
}

class Compiler {
  constructor(tree) {
    this.types = new Map(); // field -> type, for changed() (see the header)
    this.collect(tree);
  }

  collect(node) {
    if (node === null || typeof node !== "object") return;
    if (Array.isArray(node)) {
      node.forEach((n) => this.collect(n));
      return;
    }
    if (node.t === "field" && node.path.length === 1 && node.ty) this.types.set(node.path[0], node.ty);
    if (node.t === "old" && node.ty) this.types.set(node.field, node.ty);
    for (const key of ["a", "b", "c", "args", "items"]) if (key in node) this.collect(node[key]);
  }

  compile(node) {
    const kind = node && node.t;
    if (!Object.prototype.hasOwnProperty.call(Compiler.prototype, `_${kind}`)) {
      throw new UnsupportedError(`unknown expression node ${JSON.stringify(kind)}`);
    }
    return this[`_${kind}`](node);
  }

  _lit(node) {
    const v = node.v === undefined ? null : node.v;
    return () => v;
  }

  _field(node) {
    const ty = node.ty;
    if (node.path.length === 1) {
      const name = node.path[0];
      return (env) => fromWire(own(env.rec, name), ty);
    }
    const dotted = node.path.join(".");
    return (env) => fromWire(own(env.paths, dotted), ty);
  }

  _old(node) {
    const { field, ty } = node;
    return (env) => (env.old === null ? null : fromWire(own(env.old, field), ty));
  }

  _changed(node) {
    const name = node.field;
    const ty = node.fty || this.types.get(name);
    return (env) => {
      if (env.old === null) return own(env.rec, name) !== null; // a create "changes" every field it sets
      if (!ty) return guessedDiffer(own(env.rec, name), own(env.old, name));
      const a = fromWire(own(env.rec, name), ty);
      const b = fromWire(own(env.old, name), ty);
      if (a === null || b === null) return a !== b;
      return !equals(a, b);
    };
  }

  _var(node) {
    if (node.name === "user.id") return (env) => env.user_id;
    if (node.name === "user.role") return (env) => env.user_role;
    throw new UnsupportedError(`unknown variable $${node.name}`);
  }

  _neg(node) {
    const a = this.compile(node.a);
    const decimal = node.ty === "decimal";
    return (env) => {
      const v = a(env);
      if (v === null) return null;
      return decimal || v instanceof Dec ? toDec(v).neg() : -v;
    };
  }

  _not(node) {
    const a = this.compile(node.a);
    return (env) => {
      const v = a(env);
      return v === null ? null : !v;
    };
  }

  _and(node) {
    const args = node.args.map((n) => this.compile(n));
    return (env) => {
      let unknown = false;
      for (const arg of args) {
        const v = arg(env);
        if (v === false) return false;
        if (v === null) unknown = true;
      }
      return unknown ? null : true;
    };
  }

  _or(node) {
    const args = node.args.map((n) => this.compile(n));
    return (env) => {
      let unknown = false;
      for (const arg of args) {
        const v = arg(env);
        if (v === true) return true;
        if (v === null) unknown = true;
      }
      return unknown ? null : false;
    };
  }

  _arith(node) {
    const a = this.compile(node.a);
    const b = this.compile(node.b);
    const fn = arithmetic(node.op, node.ty);
    return (env) => {
      const x = a(env);
      if (x === null) return null;
      const y = b(env);
      if (y === null) return null;
      return fn(x, y);
    };
  }

  _cmp(node) {
    const a = this.compile(node.a);
    const b = this.compile(node.b);
    const test = CMP[node.op];
    const tys = [node.a.ty, node.b.ty];
    let order;
    if (tys.includes("decimal")) order = comparator("decimal");
    else if (tys.includes("number")) order = comparator("number");
    else if (tys.includes("boolean") || tys.includes("list")) order = (x, y) => (equals(x, y) ? 0 : 1);
    else order = compareText;
    return (env) => {
      const x = a(env);
      if (x === null) return null;
      const y = b(env);
      if (y === null) return null;
      return test(order(x, y));
    };
  }

  _in(node) {
    const a = this.compile(node.a);
    const decimal = node.a.ty === "decimal";
    const items = node.items.map((i) => (decimal ? toDec(i.v) : i.v));
    const neg = Boolean(node.neg);
    return (env) => {
      const x = a(env);
      if (x === null) return null;
      const found = decimal ? items.some((i) => equals(i, x)) : items.includes(x);
      return found !== neg;
    };
  }

  _if(node) {
    const c = this.compile(node.c);
    const a = this.compile(node.a);
    const b = this.compile(node.b);
    const decimal = node.ty === "decimal";
    return (env) => {
      const v = c(env) === true ? a(env) : b(env);
      return decimal && v !== null ? toDec(v) : v;
    };
  }

  _call(node) {
    const spec = hasOwn(FUNCTIONS, node.fn) ? FUNCTIONS[node.fn] : null;
    if (spec === null) throw new UnsupportedError(`function ${node.fn}() has no browser implementation`);
    if (node.fn === "case") return this._case(node);
    const args = node.args.map((n) => this.compile(n));
    const literal = node.args.length > 0 && node.args.every((n) => n.t === "lit");
    const call = { ty: node.ty, regex: null };
    if (node.fn === "regex_match" && node.args[1] && node.args[1].t === "lit") {
      call.regex = translateRegex(node.args[1].v);
    }
    if ((node.fn === "date" || node.fn === "datetime") && literal) {
      let value;
      let error = null;
      try {
        value = spec.fn(node.args.map((n) => n.v), call);
      } catch (exc) {
        error = exc;
      }
      return () => {
        if (error) throw error;
        return value;
      };
    }
    const decimal = node.ty === "decimal";
    const finish = (v) => {
      const r = checkResult(v === undefined ? null : v);
      return decimal && r !== null ? toDec(r) : r;
    };
    if (spec.nullAware) return (env) => finish(spec.fn(args.map((a) => a(env)), call, env));
    return (env) => {
      const values = [];
      for (const a of args) {
        const v = a(env);
        if (v === null) return null;
        values.push(v);
      }
      return finish(spec.fn(values, call, env));
    };
  }

  /**
   * case(x, v1, r1, ..., default): as Python, only the subject, the matches up to the
   * first equal one and the chosen result are evaluated; literal matches against a
   * decimal subject compare as decimals (0.1 as written), and the result is not range-checked.
   */
  _case(node) {
    const nodes = node.args;
    const subject = this.compile(nodes[0]);
    const decimal = node.ty === "decimal";
    const result = (n) => {
      const r = this.compile(n);
      return decimal ? (env) => ((v) => (v === null ? null : toDec(v)))(r(env)) : r;
    };
    const fallback = result(nodes[nodes.length - 1]);
    const pairs = [];
    for (let i = 1; i < nodes.length - 1; i += 2) pairs.push([nodes[i], result(nodes[i + 1])]);
    if (pairs.every(([m]) => m.t === "lit")) {
      const decimalSubject = nodes[0].ty === "decimal";
      const table = pairs.filter(([m]) => m.v !== null).map(([m, r]) => [decimalSubject ? toDec(m.v) : m.v, r]);
      return (env) => {
        const x = subject(env);
        if (x === null) return fallback(env);
        const hit = table.find(([key]) => equals(key, x));
        return hit ? hit[1](env) : fallback(env);
      };
    }
    const matches = pairs.map(([m, r]) => [this.compile(m), r]);
    return (env) => {
      const x = subject(env);
      if (x !== null) {
        for (const [m, r] of matches) {
          const v = m(env);
          if (v !== null && equals(v, x)) return r(env);
        }
      }
      return fallback(env);
    };
  }
}

function prepareEnv(env) {
  const e = env || {};
  const now = (typeof e.now === "string" && parseDatetime(e.now)) || nowCanonical();
  const today = typeof e.today === "string" && fromWire(e.today, "date") !== null ? e.today : now.slice(0, 10);
  return {
    rec: e.rec && typeof e.rec === "object" ? e.rec : {},
    old: e.old && typeof e.old === "object" ? e.old : null,
    paths: e.paths && typeof e.paths === "object" ? e.paths : {},
    user_id: typeof e.user_id === "number" ? e.user_id : null,
    user_role: typeof e.user_role === "string" ? e.user_role : null,
    now,
    today,
  };
}

/**
 * Compile a typed tree (Expression.tree on the server) to a function of an environment.
 *
 * @param {object} tree the typed JSON tree
 * @param {{exact?: boolean}} [options] exact: a decimal result comes back as exact text
 *   ("12345e-2", which this module and Intl.NumberFormat read without rounding) instead
 *   of the nearest number
 * @returns {(env: object) => any} evaluates to a plain value (see the module header)
 * @throws {UnsupportedError} for plugin functions and patterns the browser cannot run
 */
export function compile(tree, { exact = false } = {}) {
  const run = new Compiler(tree).compile(tree);
  const ty = tree.ty;
  if (exact) {
    return (env) => {
      const v = run(prepareEnv(env));
      return v instanceof Dec ? v.toString() : toPublic(v, ty);
    };
  }
  return (env) => toPublic(run(prepareEnv(env)), ty);
}

const CACHE = new WeakMap();

/**
 * Evaluate a typed tree against an environment; compiled trees are cached per tree object.
 *
 * @throws {EvaluationError} when a cap is hit, as on the server
 * @throws {UnsupportedError} see compile()
 */
export function evaluate(tree, env) {
  let run = CACHE.get(tree);
  if (run === undefined) {
    run = compile(tree);
    CACHE.set(tree, run);
  }
  return run(env);
}
