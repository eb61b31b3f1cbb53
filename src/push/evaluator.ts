// Push rule evaluation (client-server spec, "Push Rules": conditions, actions, rule kinds).
//
// Built for fan-out: flatten an event once (`flattenEvent`), then evaluate it against many users'
// rulesets. Rulesets compile to closures (cached per ruleset object in a WeakMap, or explicitly via
// `compileRuleset`), glob patterns compile to RegExps in a shared bounded cache, and lowercased
// event strings are cached on the flattened event, so each extra user costs a handful of Map
// lookups and string compares.
//
// Case-insensitivity ("defined by the implementation" per the spec) is: both sides lowercased with
// String.prototype.toLowerCase, then compared exactly.

import { LEGACY_MENTION_RULE_IDS } from './default-rules.js';
import {
  PUSH_RULE_KINDS,
  ROOM_MEMBER_COUNT_RE,
  stripLegacyActions,
  type PushAction,
  type PushCondition,
  type PushRule,
  type PushRuleKind,
  type PushRulesContent,
  type Ruleset,
} from './rules.js';

// ---------------------------------------------------------------------------------------------
// Public types.

export interface PushContext {
  /** The user whose rules are evaluated. Their own events never notify. */
  userId: string;
  /** The user's display name in the room (for the deprecated `contains_display_name` condition). */
  displayName?: string | null;
  /** Current number of joined members in the room. */
  roomMemberCount: number;
  /** Power level of the event's sender in the room. */
  senderPowerLevel: number;
  /** `content.notifications` of m.room.power_levels; `room` defaults to 50 when absent. */
  notificationPowerLevels?: Record<string, number>;
}

export interface PushEvaluation {
  /** The matched rule's actions include `notify`. */
  readonly notify: boolean;
  /** `notify` and a `highlight` tweak that is true (a tweak without `value` means true). */
  readonly highlight: boolean;
  /** The `sound` tweak, if set to a string. */
  readonly sound?: string;
  /** All `set_tweak`s of the matched rule (highlight without value resolved to true). */
  readonly tweaks: Readonly<Record<string, unknown>>;
  /** The matched rule's actions, with historical `dont_notify`/`coalesce` stripped. */
  readonly actions: readonly PushAction[];
  readonly ruleId?: string;
  readonly kind?: PushRuleKind;
}

/** Leaf values kept by flattening: scalars, plus arrays (for event_property_contains). */
export type FlatValue = string | number | boolean | null | readonly unknown[];

export type EventLike = Record<string, unknown>;

const NO_MATCH: PushEvaluation = Object.freeze({
  notify: false,
  highlight: false,
  tweaks: Object.freeze({}),
  actions: Object.freeze([]) as readonly PushAction[],
});

// ---------------------------------------------------------------------------------------------
// Dot-separated property paths (appendix "Dot-separated property paths").

/** Escapes one property name for use in a path: `.` -> `\.`, `\` -> `\\`. */
export function escapePathSegment(segment: string): string {
  if (segment.indexOf('.') < 0 && segment.indexOf('\\') < 0) return segment;
  return segment.replace(/[\\.]/g, '\\$&');
}

/**
 * Splits a path into property names. `\.` is a literal dot, `\\` a literal backslash; any other
 * backslash is kept literally (`\x` = backslash + `x`), as the appendix says.
 */
export function parsePropertyPath(path: string): string[] {
  const segments: string[] = [];
  let cur = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i];
    if (c === '\\') {
      const n = path[i + 1];
      if (n === '.' || n === '\\') {
        cur += n;
        i++;
      } else {
        cur += '\\';
      }
    } else if (c === '.') {
      segments.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  segments.push(cur);
  return segments;
}

const MAX_CACHE = 10_000;
const canonicalKeyCache = new Map<string, string>();

/** The path re-escaped minimally, i.e. the form `flattenEvent` uses for its keys. */
export function canonicalPropertyPath(path: string): string {
  let c = canonicalKeyCache.get(path);
  if (c === undefined) {
    c = parsePropertyPath(path).map(escapePathSegment).join('.');
    if (canonicalKeyCache.size >= MAX_CACHE) canonicalKeyCache.clear();
    canonicalKeyCache.set(path, c);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Flattened events.

const MAX_DEPTH = 32;

/**
 * An event flattened to `canonical dotted path -> leaf value`. Objects are descended into; arrays
 * and scalars are leaves (so paths never go through arrays). Create once per event and reuse it for
 * every user.
 */
export class FlattenedEvent {
  readonly values = new Map<string, FlatValue>();
  readonly type: string | undefined;
  readonly sender: string | undefined;
  readonly roomId: string | undefined;
  /** `content` has an `m.mentions` property (legacy mention rules are then skipped). */
  readonly hasMentions: boolean;
  private readonly lowerCache = new Map<string, string | null>();

  constructor(event: EventLike) {
    walk(event, '', this.values, 0);
    this.type = typeof event.type === 'string' ? event.type : undefined;
    this.sender = typeof event.sender === 'string' ? event.sender : undefined;
    this.roomId = typeof event.room_id === 'string' ? event.room_id : undefined;
    const content = event.content;
    this.hasMentions = typeof content === 'object' && content !== null && !Array.isArray(content)
      && Object.prototype.hasOwnProperty.call(content, 'm.mentions');
  }

  /** The value at a canonical path, or undefined when absent. */
  get(key: string): FlatValue | undefined {
    return this.values.get(key);
  }

  /** The lowercased string at a canonical path; undefined if absent or not a string. */
  lowerString(key: string): string | undefined {
    let v = this.lowerCache.get(key);
    if (v === undefined) {
      const raw = this.values.get(key);
      v = typeof raw === 'string' ? raw.toLowerCase() : null;
      this.lowerCache.set(key, v);
    }
    return v === null ? undefined : v;
  }
}

function walk(obj: Record<string, unknown>, prefix: string, out: Map<string, FlatValue>, depth: number): void {
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    const path = prefix + escapePathSegment(k);
    if (v === null || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') {
      out.set(path, v);
    } else if (Array.isArray(v)) {
      out.set(path, v);
    } else if (typeof v === 'object' && depth < MAX_DEPTH) {
      walk(v as Record<string, unknown>, path + '.', out, depth + 1);
    }
  }
}

export function flattenEvent(event: EventLike): FlattenedEvent {
  return new FlattenedEvent(event);
}

// ---------------------------------------------------------------------------------------------
// Glob matching (appendix "Glob-style matching": `*` = zero or more chars, `?` = exactly one).

const WORD = '[A-Za-z0-9_]';
// A position is a word boundary unless it sits between two word characters; so a matched
// substring starts/ends at the value's start/end, next to a non-word character, or itself starts/ends
// with a non-word character.
const WB = `(?:(?<!${WORD})|(?!${WORD}))`;

const globCache = new Map<string, RegExp>();

function hasWildcard(pattern: string): boolean {
  return pattern.indexOf('*') >= 0 || pattern.indexOf('?') >= 0;
}

function globSource(pattern: string, literal: boolean): string {
  let src = '';
  let prevStar = false;
  for (const ch of pattern) { // iterates code points; `?` therefore matches one code point
    if (!literal && ch === '*') {
      if (!prevStar) src += '[\\s\\S]*';
      prevStar = true;
      continue;
    }
    prevStar = false;
    if (!literal && ch === '?') src += '[\\s\\S]';
    else src += ch.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
  }
  return src;
}

/**
 * RegExp for a lowercased glob (or literal when `literal`), matched against lowercased text.
 * `word`: substring match bounded by word boundaries (content.body semantics); otherwise whole value.
 */
export function globToRegExp(lowerPattern: string, word: boolean, literal = false): RegExp {
  const cacheKey = (word ? 'w' : 'f') + (literal ? 'l' : 'g') + lowerPattern;
  let re = globCache.get(cacheKey);
  if (re === undefined) {
    const src = globSource(lowerPattern, literal);
    re = new RegExp(word ? `${WB}${src}${WB}` : `^${src}$`, 'u');
    if (globCache.size >= MAX_CACHE) globCache.clear();
    globCache.set(cacheKey, re);
  }
  return re;
}

/**
 * Case-insensitive glob match. `wordBoundary` gives the content.body semantics (any substring
 * starting and ending at a word boundary); otherwise the whole value must match.
 */
export function globMatches(pattern: string, value: string, wordBoundary: boolean): boolean {
  return makeStringMatcher(pattern.toLowerCase(), wordBoundary, false)(value.toLowerCase());
}

type StringMatcher = (lowerValue: string) => boolean;

function makeStringMatcher(lowerPattern: string, word: boolean, literal: boolean): StringMatcher {
  if (literal || !hasWildcard(lowerPattern)) {
    if (!word) return (v) => v === lowerPattern;
    const re = globToRegExp(lowerPattern, true, true);
    return (v) => v.includes(lowerPattern) && re.test(v);
  }
  const re = globToRegExp(lowerPattern, word);
  return (v) => re.test(v);
}

// ---------------------------------------------------------------------------------------------
// Condition and rule compilation.

type Matcher = (ev: FlattenedEvent, ctx: PushContext) => boolean;

const never: Matcher = () => false;
const always: Matcher = () => true;

const BODY_KEY = 'content.body';

function isScalar(v: unknown): v is string | number | boolean | null {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number';
}

// event_match matchers are pure functions of (key, pattern), so identical conditions across users'
// rulesets (most of the default rules) share one closure.
const eventMatchCache = new Map<string, Matcher>();

function compileEventMatch(key: unknown, pattern: unknown): Matcher {
  if (typeof key !== 'string' || typeof pattern !== 'string') return never;
  const cacheKey = key + '\u0000' + pattern;
  let matcher = eventMatchCache.get(cacheKey);
  if (matcher === undefined) {
    const k = canonicalPropertyPath(key);
    const m = makeStringMatcher(pattern.toLowerCase(), k === BODY_KEY, false);
    matcher = (ev) => {
      const v = ev.lowerString(k);
      return v !== undefined && m(v);
    };
    if (eventMatchCache.size >= MAX_CACHE) eventMatchCache.clear();
    eventMatchCache.set(cacheKey, matcher);
  }
  return matcher;
}

function compileRoomMemberCount(is: unknown): Matcher {
  if (typeof is !== 'string') return never;
  const m = ROOM_MEMBER_COUNT_RE.exec(is);
  if (!m) return never;
  const n = Number(m[2]);
  switch (m[1]) {
    case '<': return (_ev, ctx) => ctx.roomMemberCount < n;
    case '>': return (_ev, ctx) => ctx.roomMemberCount > n;
    case '<=': return (_ev, ctx) => ctx.roomMemberCount <= n;
    case '>=': return (_ev, ctx) => ctx.roomMemberCount >= n;
    default: return (_ev, ctx) => ctx.roomMemberCount === n;
  }
}

function requiredNotificationLevel(ctx: PushContext, key: string): number | undefined {
  const raw = ctx.notificationPowerLevels?.[key] as unknown;
  if (typeof raw === 'number' && Number.isFinite(raw)) return raw;
  if (typeof raw === 'string' && /^-?[0-9]+$/.test(raw.trim())) return Number(raw.trim());
  return key === 'room' ? 50 : undefined;
}

const displayNameMatchers = new Map<string, StringMatcher>();

function containsDisplayName(ev: FlattenedEvent, ctx: PushContext): boolean {
  const name = ctx.displayName;
  if (typeof name !== 'string' || name.length === 0) return false;
  const body = ev.lowerString(BODY_KEY);
  if (body === undefined) return false;
  let m = displayNameMatchers.get(name);
  if (m === undefined) {
    m = makeStringMatcher(name.toLowerCase(), true, true);
    if (displayNameMatchers.size >= MAX_CACHE) displayNameMatchers.clear();
    displayNameMatchers.set(name, m);
  }
  return m(body);
}

/** Compiles one condition. Unknown kinds and malformed conditions never match. */
export function compileCondition(c: PushCondition): Matcher {
  if (typeof c !== 'object' || c === null) return never;
  switch (c.kind) {
    case 'event_match':
      return compileEventMatch(c.key, c.pattern);
    case 'event_property_is': {
      if (typeof c.key !== 'string' || !('value' in c) || !isScalar(c.value)) return never;
      const k = canonicalPropertyPath(c.key);
      const want = c.value;
      return (ev) => {
        const v = ev.values.get(k);
        return v !== undefined && v === want;
      };
    }
    case 'event_property_contains': {
      if (typeof c.key !== 'string' || !('value' in c) || !isScalar(c.value)) return never;
      const k = canonicalPropertyPath(c.key);
      const want = c.value;
      return (ev) => {
        const v = ev.values.get(k);
        return Array.isArray(v) && v.includes(want);
      };
    }
    case 'contains_display_name':
      return containsDisplayName;
    case 'room_member_count':
      return compileRoomMemberCount(c.is);
    case 'sender_notification_permission': {
      if (typeof c.key !== 'string') return never;
      const key = c.key;
      return (_ev, ctx) => {
        const req = requiredNotificationLevel(ctx, key);
        return req !== undefined && ctx.senderPowerLevel >= req;
      };
    }
    default:
      return never;
  }
}

function compileConditions(conditions: readonly PushCondition[] | undefined): Matcher {
  if (conditions === undefined || conditions.length === 0) return always;
  const ms = conditions.map(compileCondition);
  if (ms.includes(never)) return never;
  if (ms.length === 1) return ms[0];
  if (ms.length === 2) {
    const [a, b] = ms;
    return (ev, ctx) => a(ev, ctx) && b(ev, ctx);
  }
  return (ev, ctx) => {
    for (const m of ms) if (!m(ev, ctx)) return false;
    return true;
  };
}

interface ActionSummary {
  readonly notify: boolean;
  readonly highlight: boolean;
  readonly sound: string | undefined;
  readonly tweaks: Readonly<Record<string, unknown>>;
  readonly actions: readonly PushAction[];
}

const summaryCache = new Map<string, ActionSummary>();
const SEPARATORS = /[\u0000\u0001]/;

/**
 * Cheap cache key for the common shapes (strings; `{set_tweak, value?}` with a scalar value).
 * Anything else returns undefined and is summarised uncached.
 */
function actionsCacheKey(actions: readonly PushAction[]): string | undefined {
  if (!Array.isArray(actions)) return undefined;
  let key = '';
  for (const a of actions) {
    if (typeof a === 'string') {
      if (SEPARATORS.test(a)) return undefined;
      key += 's' + a + '\u0000';
      continue;
    }
    if (typeof a !== 'object' || a === null || typeof a.set_tweak !== 'string') return undefined;
    if (SEPARATORS.test(a.set_tweak)) return undefined;
    let n = 0;
    for (const _k in a) n++;
    const v = a.value;
    if (v === undefined) {
      if (n !== 1) return undefined;
      key += 't' + a.set_tweak + '\u0001u\u0000';
    } else {
      if (n !== 2) return undefined;
      const t = typeof v;
      if (t !== 'string' && t !== 'number' && t !== 'boolean') return undefined;
      if (t === 'string' && SEPARATORS.test(v as string)) return undefined;
      key += 't' + a.set_tweak + '\u0001' + t[0] + String(v) + '\u0000';
    }
  }
  return key;
}

function summarize(actions: readonly PushAction[]): ActionSummary {
  const cacheKey = actionsCacheKey(actions);
  const hit = cacheKey === undefined ? undefined : summaryCache.get(cacheKey);
  if (hit) return hit;
  const cleaned = stripLegacyActions(Array.isArray(actions) ? actions : []);
  let notify = false;
  const tweaks: Record<string, unknown> = {};
  for (const a of cleaned) {
    if (a === 'notify') notify = true;
    else if (typeof a === 'object' && a !== null && typeof a.set_tweak === 'string') {
      const value = a.set_tweak === 'highlight' && a.value === undefined ? true : a.value;
      // defineProperty so a tweak named "__proto__" is just data.
      Object.defineProperty(tweaks, a.set_tweak, { value, enumerable: true, writable: true, configurable: true });
    }
  }
  const summary: ActionSummary = Object.freeze({
    notify,
    highlight: notify && tweaks.highlight === true,
    sound: typeof tweaks.sound === 'string' ? tweaks.sound : undefined,
    tweaks: Object.freeze(tweaks),
    actions: Object.freeze(cleaned),
  });
  if (cacheKey !== undefined) {
    if (summaryCache.size >= MAX_CACHE) summaryCache.clear();
    summaryCache.set(cacheKey, summary);
  }
  return summary;
}

/** notify / highlight / sound / tweaks derived from an actions list (frozen). */
export function summarizeActions(actions: readonly PushAction[], ruleId?: string, kind?: PushRuleKind): PushEvaluation {
  const s = summarize(actions);
  return Object.freeze({
    notify: s.notify, highlight: s.highlight, sound: s.sound, tweaks: s.tweaks, actions: s.actions, ruleId, kind,
  });
}

class CompiledRule {
  private cachedResult: PushEvaluation | undefined;
  constructor(
    readonly ruleId: string,
    readonly kind: PushRuleKind,
    readonly legacyMention: boolean,
    readonly match: Matcher,
    private readonly actions: readonly PushAction[],
  ) {}

  /** Built on first match only: most rules never match, so compiling stays cheap. */
  get result(): PushEvaluation {
    return (this.cachedResult ??= summarizeActions(this.actions, this.ruleId, this.kind));
  }
}

/** A ruleset compiled for evaluation: enabled rules only, in evaluation order. */
export class CompiledRuleset {
  constructor(readonly rules: readonly CompiledRule[]) {}
}

function compileRule(kind: PushRuleKind, rule: PushRule): CompiledRule {
  let match: Matcher;
  switch (kind) {
    case 'override':
    case 'underride':
      match = compileConditions(rule.conditions);
      break;
    case 'content':
      match = typeof rule.pattern === 'string' ? compileEventMatch(BODY_KEY, rule.pattern) : never;
      break;
    case 'room': {
      const id = rule.rule_id;
      match = (ev) => ev.roomId === id;
      break;
    }
    case 'sender': {
      const id = rule.rule_id;
      match = (ev) => ev.sender === id;
      break;
    }
  }
  const actions = Array.isArray(rule.actions) ? rule.actions : [];
  return new CompiledRule(rule.rule_id, kind, LEGACY_MENTION_RULE_IDS.has(rule.rule_id), match, actions);
}

// Identical rules share one compiled rule: most server-default rules are the same for every user, so
// a process caching thousands of users' compiled rulesets pays mainly for their user-specific rules
// (measured: ~5.7 KB per default ruleset unshared, ~1.7 KB shared). One candidate is kept per
// (kind, rule_id) and compared structurally: building string keys for a Map made compiling 2-5x
// slower. Compiled rules are immutable (the lazy result derives from the same actions), so sharing is
// safe. A rule that differs from the kept candidate (a mention rule naming another user, a changed
// default) is compiled on its own.

interface SharedRule { rule: PushRule; compiled: CompiledRule }

const sharedRules: Record<PushRuleKind, Map<string, SharedRule>> = {
  override: new Map(), content: new Map(), room: new Map(), sender: new Map(), underride: new Map(),
};
let sharedCount = 0;

function sameScalar(a: unknown, b: unknown): boolean {
  return a === b || (a !== a && b !== b); // NaN never comes from JSON, but stay total
}

function sameAction(a: PushAction, b: PushAction): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return false;
  let n = 0;
  for (const k in a) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    const va = a[k];
    if (va !== null && typeof va === 'object') return false; // nested tweak values: not shared
    if (!sameScalar(va, b[k])) return false;
    n++;
  }
  for (const _k in b) n--;
  return n === 0;
}

function sameCondition(a: PushCondition, b: PushCondition): boolean {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return false;
  return a.kind === b.kind && a.key === b.key && a.pattern === b.pattern && a.is === b.is
    && ('value' in a) === ('value' in b) && sameScalar(a.value, b.value)
    && (a.value === null || typeof a.value !== 'object');
}

/** Same everything compileRule reads: rule_id, pattern, conditions, actions. */
function sameRule(a: PushRule, b: PushRule): boolean {
  if (a.rule_id !== b.rule_id || a.pattern !== b.pattern) return false;
  const ca = a.conditions;
  const cb = b.conditions;
  if (ca !== cb) {
    if (!Array.isArray(ca) || !Array.isArray(cb) || ca.length !== cb.length) return false;
    for (let i = 0; i < ca.length; i++) if (!sameCondition(ca[i], cb[i])) return false;
  }
  const aa = a.actions;
  const ab = b.actions;
  if (aa !== ab) {
    if (!Array.isArray(aa) || !Array.isArray(ab) || aa.length !== ab.length) return false;
    for (let i = 0; i < aa.length; i++) if (!sameAction(aa[i], ab[i])) return false;
  }
  return true;
}

/** A copy of what sameRule compares, so a caller mutating its ruleset later cannot skew sharing. */
function snapshotRule(rule: PushRule): PushRule {
  const copy: PushRule = { ...rule };
  if (Array.isArray(rule.conditions)) copy.conditions = rule.conditions.map((c) => (typeof c === 'object' && c !== null ? { ...c } : c));
  if (Array.isArray(rule.actions)) copy.actions = rule.actions.map((a) => (typeof a === 'object' && a !== null ? { ...a } : a));
  return copy;
}

function compileRuleShared(kind: PushRuleKind, rule: PushRule): CompiledRule {
  const byId = sharedRules[kind];
  const hit = byId.get(rule.rule_id);
  if (hit !== undefined) return sameRule(hit.rule, rule) ? hit.compiled : compileRule(kind, rule);
  const compiled = compileRule(kind, rule);
  if (sharedCount >= MAX_CACHE) {
    for (const k of PUSH_RULE_KINDS) sharedRules[k].clear();
    sharedCount = 0;
  }
  byId.set(rule.rule_id, { rule: snapshotRule(rule), compiled });
  sharedCount++;
  return compiled;
}

const compiledCache = new WeakMap<object, CompiledRuleset>();

/**
 * Compiles a ruleset (`{global: ...}` or the inner ruleset). Results are cached per ruleset object,
 * so do not mutate a ruleset after evaluating with it (build a new object instead).
 */
export function compileRuleset(ruleset: Ruleset | PushRulesContent): CompiledRuleset {
  const cached = compiledCache.get(ruleset);
  if (cached) return cached;
  const rs: Ruleset = 'global' in ruleset ? ruleset.global : ruleset;
  const rules: CompiledRule[] = [];
  for (const kind of PUSH_RULE_KINDS) {
    for (const rule of rs[kind] ?? []) {
      if (!rule || rule.enabled === false || typeof rule.rule_id !== 'string') continue;
      const c = compileRuleShared(kind, rule);
      if (c.match !== never) rules.push(c);
    }
  }
  const compiled = new CompiledRuleset(rules);
  compiledCache.set(ruleset, compiled);
  return compiled;
}

/**
 * Evaluates `event` for `ctx.userId`: the first enabled matching rule (override, content, room,
 * sender, underride, each in order) decides. No match, or an event the user sent, gives
 * `notify: false, highlight: false, actions: []`. The legacy plaintext-mention rules (if present)
 * are skipped for events whose content has `m.mentions`. The returned object is frozen and shared.
 */
export function evaluatePushRules(
  ruleset: Ruleset | PushRulesContent | CompiledRuleset,
  event: EventLike | FlattenedEvent,
  ctx: PushContext,
): PushEvaluation {
  const ev = event instanceof FlattenedEvent ? event : new FlattenedEvent(event);
  if (ev.sender !== undefined && ev.sender === ctx.userId) return NO_MATCH;
  const compiled = ruleset instanceof CompiledRuleset ? ruleset : compileRuleset(ruleset);
  const rules = compiled.rules;
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.legacyMention && ev.hasMentions) continue;
    if (r.match(ev, ctx)) return r.result;
  }
  return NO_MATCH;
}
