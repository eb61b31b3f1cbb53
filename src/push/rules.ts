// Push rule types, ruleset merging (server-default + user-defined rules), request-body validation
// and before/after positioning for the push rules API (client-server spec, "Push Rules").
//
// Pure code: no I/O. Storage keeps, per user, the ordered user-defined rules of each kind plus the
// `enabled`/`actions` overrides a user applied to server-default rules; `mergeRuleset` turns that
// into what `GET /pushrules/` returns.

import { defaultRuleset, type DefaultRulesetOptions } from './default-rules.js';

export const PUSH_RULE_KINDS = ['override', 'content', 'room', 'sender', 'underride'] as const;
export type PushRuleKind = (typeof PUSH_RULE_KINDS)[number];

/** A non-compound canonical JSON value (what event_property_is/contains compare against). */
export type PushScalar = string | number | boolean | null;

/** A push condition as it appears on the wire (spec: definitions/push_condition.yaml). */
export interface PushCondition {
  kind: string;
  key?: string;
  pattern?: string;
  is?: string;
  value?: PushScalar;
  [extra: string]: unknown;
}

export interface PushTweakAction {
  set_tweak: string;
  value?: unknown;
  [extra: string]: unknown;
}

/** `"notify"` (plus the historical `"dont_notify"`/`"coalesce"`), or a `set_tweak` object. */
export type PushAction = string | PushTweakAction;

/** A push rule as it appears on the wire (spec: definitions/push_rule.yaml). */
export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: PushAction[];
  /** override / underride rules only. */
  conditions?: PushCondition[];
  /** content rules only. */
  pattern?: string;
}

/** One ruleset scope (`global`), rules of each kind ordered most important first. */
export interface Ruleset {
  override: PushRule[];
  content: PushRule[];
  room: PushRule[];
  sender: PushRule[];
  underride: PushRule[];
}

/** Body of `GET /pushrules/` and content of the `m.push_rules` account data event. */
export interface PushRulesContent {
  global: Ruleset;
}

/** User-defined rules as stored, per kind, already in priority order (most important first). */
export type UserRules = Partial<Record<PushRuleKind, PushRule[]>>;

/** What a user changed on a server-default rule via `/enabled` or `/actions`. */
export interface DefaultRuleOverride {
  enabled?: boolean;
  actions?: PushAction[];
}

/** Per kind, per server-default rule_id. Entries for rules that no longer exist are ignored. */
export type DefaultRuleOverrides = Partial<Record<PushRuleKind, Record<string, DefaultRuleOverride>>>;

export const MASTER_RULE_ID = '.m.rule.master';

export function isPushRuleKind(kind: unknown): kind is PushRuleKind {
  return typeof kind === 'string' && (PUSH_RULE_KINDS as readonly string[]).includes(kind);
}

/** Server-default rule IDs start with a dot; clients may not create such rules. */
export function isServerDefaultRuleId(ruleId: string): boolean {
  return ruleId.startsWith('.');
}

export function emptyRuleset(): Ruleset {
  return { override: [], content: [], room: [], sender: [], underride: [] };
}

/** Drops the historical `dont_notify` / `coalesce` actions, which the spec says MUST be ignored. */
export function stripLegacyActions(actions: readonly PushAction[]): PushAction[] {
  const out: PushAction[] = [];
  for (const a of actions) {
    if (a === 'dont_notify' || a === 'coalesce') continue;
    out.push(typeof a === 'string' ? a : { ...a });
  }
  return out;
}

function copyCondition(c: PushCondition): PushCondition {
  return { ...c };
}

/** Wire shape for a rule of `kind`: keeps only the fields that apply to that kind. */
function shapeRule(kind: PushRuleKind, rule: PushRule, isDefault: boolean, enabled: boolean,
  actions: readonly PushAction[]): PushRule {
  const out: PushRule = { rule_id: rule.rule_id, default: isDefault, enabled, actions: stripLegacyActions(actions) };
  if (kind === 'override' || kind === 'underride') {
    out.conditions = (rule.conditions ?? []).map(copyCondition);
  } else if (kind === 'content') {
    if (typeof rule.pattern === 'string') out.pattern = rule.pattern;
  }
  return out;
}

function applyDefault(kind: PushRuleKind, rule: PushRule, overrides: DefaultRuleOverrides | undefined): PushRule {
  const o = overrides?.[kind]?.[rule.rule_id];
  const enabled = typeof o?.enabled === 'boolean' ? o.enabled : rule.enabled;
  const actions = Array.isArray(o?.actions) ? o.actions : rule.actions;
  return shapeRule(kind, rule, true, enabled, actions);
}

function applyUser(kind: PushRuleKind, rule: PushRule): PushRule {
  return shapeRule(kind, rule, false, rule.enabled !== false, rule.actions ?? []);
}

/**
 * Builds the full ruleset a client sees from `GET /pushrules/`.
 *
 * Ordering per the spec's "Predefined Rules": server-default rules have lower priority than
 * user-defined rules of the same kind, except `.m.rule.master`, which always comes first. So:
 *   override  = [.m.rule.master, ...user override, ...other default override]
 *   content   = [...user content, ...default content]
 *   room      = [...user room]
 *   sender    = [...user sender]
 *   underride = [...user underride, ...default underride]
 *
 * User rules whose rule_id collides with a server-default ID (leading dot) are dropped.
 */
export function mergeRuleset(
  userId: string,
  userRules: UserRules = {},
  defaultOverrides?: DefaultRuleOverrides,
  options?: DefaultRulesetOptions,
): PushRulesContent {
  const defaults = defaultRuleset(userId, options).global;
  const out = emptyRuleset();
  for (const kind of PUSH_RULE_KINDS) {
    const user = (userRules[kind] ?? [])
      .filter((r) => r && typeof r.rule_id === 'string' && !isServerDefaultRuleId(r.rule_id))
      .map((r) => applyUser(kind, r));
    const defs = defaults[kind].map((r) => applyDefault(kind, r, defaultOverrides));
    if (kind === 'override') {
      const masterIdx = defs.findIndex((r) => r.rule_id === MASTER_RULE_ID);
      const master = masterIdx >= 0 ? defs.splice(masterIdx, 1) : [];
      out.override = [...master, ...user, ...defs];
    } else {
      out[kind] = [...user, ...defs];
    }
  }
  return { global: out };
}

/** Finds a rule of the given kind in a merged ruleset (accepts `{global}` or the inner ruleset). */
export function findRule(ruleset: Ruleset | PushRulesContent, kind: PushRuleKind, ruleId: string): PushRule | undefined {
  const rs = 'global' in ruleset ? ruleset.global : ruleset;
  return rs[kind].find((r) => r.rule_id === ruleId);
}

// ---------------------------------------------------------------------------------------------
// Validation for PUT /pushrules/global/{kind}/{ruleId} (and /actions).

export interface PushRuleError {
  ok: false;
  status: number;
  errcode: string;
  error: string;
}

export type ValidationResult<T> = { ok: true; value: T } | PushRuleError;

function fail(status: number, errcode: string, error: string): PushRuleError {
  return { ok: false, status, errcode, error };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks a rule ID for PUT: no leading dot (reserved for server-default rules), no `/` or `\`. */
export function validateRuleId(kind: string, ruleId: unknown): ValidationResult<string> {
  if (!isPushRuleKind(kind)) return fail(400, 'M_INVALID_PARAM', `Unknown push rule kind: ${String(kind)}`);
  if (typeof ruleId !== 'string' || ruleId.length === 0) return fail(400, 'M_INVALID_PARAM', 'Missing rule ID');
  if (isServerDefaultRuleId(ruleId)) {
    return fail(400, 'M_INVALID_PARAM', "Rule IDs starting with '.' are reserved for server-default rules");
  }
  if (ruleId.includes('/') || ruleId.includes('\\')) {
    return fail(400, 'M_INVALID_PARAM', "Rule IDs may not contain '/' or '\\'");
  }
  return { ok: true, value: ruleId };
}

/**
 * Validates an `actions` array. Strings other than `notify` (and the ignored historical
 * `dont_notify`/`coalesce`) are rejected, as are objects without a string `set_tweak`.
 * Returns the actions with the historical ones stripped.
 */
export function validateActions(actions: unknown): ValidationResult<PushAction[]> {
  if (!Array.isArray(actions)) return fail(400, 'M_BAD_JSON', 'actions must be an array');
  for (const a of actions) {
    if (typeof a === 'string') {
      if (a !== 'notify' && a !== 'dont_notify' && a !== 'coalesce') {
        return fail(400, 'M_INVALID_PARAM', `Unrecognised action: ${a}`);
      }
    } else if (isPlainObject(a)) {
      if (typeof a.set_tweak !== 'string') return fail(400, 'M_INVALID_PARAM', 'Action objects need a string set_tweak');
    } else {
      return fail(400, 'M_INVALID_PARAM', 'Actions must be strings or objects');
    }
  }
  return { ok: true, value: stripLegacyActions(actions as PushAction[]) };
}

function isPushScalar(v: unknown): v is PushScalar {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/**
 * Validates one condition. Known kinds must carry their required parameters with the right types;
 * unknown kinds are accepted as-is (the spec says they simply never match).
 */
export function validateCondition(c: unknown): ValidationResult<PushCondition> {
  if (!isPlainObject(c) || typeof c.kind !== 'string') {
    return fail(400, 'M_INVALID_PARAM', 'Each condition must be an object with a string kind');
  }
  const need = (field: string): PushRuleError | null =>
    typeof c[field] === 'string' ? null : fail(400, 'M_INVALID_PARAM', `${c.kind} condition needs a string ${field}`);
  let err: PushRuleError | null = null;
  switch (c.kind) {
    case 'event_match':
      err = need('key') ?? need('pattern');
      break;
    case 'event_property_is':
    case 'event_property_contains':
      err = need('key');
      if (!err && !('value' in c && isPushScalar(c.value))) {
        err = fail(400, 'M_INVALID_PARAM', `${c.kind} condition needs a string, integer, boolean or null value`);
      }
      break;
    case 'room_member_count':
      err = need('is');
      if (!err && !ROOM_MEMBER_COUNT_RE.test(c.is as string)) {
        err = fail(400, 'M_INVALID_PARAM', `Invalid room_member_count is: ${String(c.is)}`);
      }
      break;
    case 'sender_notification_permission':
      err = need('key');
      break;
    default:
      break; // contains_display_name (no params) and unknown kinds
  }
  if (err) return err;
  return { ok: true, value: { ...c } as PushCondition };
}

/** `is` grammar of room_member_count: optional ==, <, >, <=, >= then a decimal integer. */
export const ROOM_MEMBER_COUNT_RE = /^(==|<=|>=|<|>)?([0-9]+)$/;

/**
 * Validates a PUT body for a rule of `kind` with ID `ruleId` and returns the normalised
 * user-defined rule (`default: false`, `enabled: true`, legacy actions stripped, only the fields
 * applicable to the kind). `content` rules need a string `pattern`; `override`/`underride` take an
 * optional `conditions` array (defaults to `[]`); `room`/`sender` take only `actions` (the rule_id is
 * the room / user ID).
 */
export function validateRuleForKind(kind: string, ruleId: unknown, body: unknown): ValidationResult<PushRule> {
  const id = validateRuleId(kind, ruleId);
  if (!id.ok) return id;
  if (!isPlainObject(body)) return fail(400, 'M_BAD_JSON', 'Body must be a JSON object');
  const actions = validateActions(body.actions);
  if (!actions.ok) return actions;
  const rule: PushRule = { rule_id: id.value, default: false, enabled: true, actions: actions.value };
  const k = kind as PushRuleKind;
  if (k === 'content') {
    if (typeof body.pattern !== 'string') return fail(400, 'M_INVALID_PARAM', 'content rules need a string pattern');
    rule.pattern = body.pattern;
  } else if (k === 'override' || k === 'underride') {
    const conds = body.conditions ?? [];
    if (!Array.isArray(conds)) return fail(400, 'M_INVALID_PARAM', 'conditions must be an array');
    const out: PushCondition[] = [];
    for (const c of conds) {
      const v = validateCondition(c);
      if (!v.ok) return v;
      out.push(v.value);
    }
    rule.conditions = out;
  }
  return { ok: true, value: rule };
}

// ---------------------------------------------------------------------------------------------
// before / after positioning.

export interface InsertOptions {
  before?: string | null;
  after?: string | null;
}

/**
 * Where a PUT rule goes in `existingIds` (the ordered user-defined rule IDs of that kind, most
 * important first; may include `ruleId` itself when it is an update):
 *  - `before` given (wins if both are): immediately before that rule.
 *  - `after` given: immediately after that rule.
 *  - neither: an existing rule keeps its place; a new rule becomes the most important (index 0).
 * The index returned is into the list with `ruleId` removed. Relative positions against
 * server-default rules, unknown rules, or the rule itself are errors (400 M_UNKNOWN, as the spec's
 * example response).
 */
export function computeInsertionIndex(
  existingIds: readonly string[],
  ruleId: string,
  opts: InsertOptions = {},
): ValidationResult<number> {
  const existingAt = existingIds.indexOf(ruleId);
  const others = existingIds.filter((id) => id !== ruleId);
  const before = opts.before ?? undefined;
  const after = opts.after ?? undefined;
  const anchor = before !== undefined && before !== '' ? before : after !== undefined && after !== '' ? after : undefined;
  if (anchor === undefined) {
    return { ok: true, value: existingAt >= 0 ? existingAt : 0 };
  }
  if (isServerDefaultRuleId(anchor)) {
    return fail(400, 'M_UNKNOWN', `Cannot position a rule relative to a server-default rule: ${anchor}`);
  }
  if (anchor === ruleId) return fail(400, 'M_UNKNOWN', `Cannot position a rule relative to itself: ${anchor}`);
  const idx = others.indexOf(anchor);
  if (idx < 0) return fail(400, 'M_UNKNOWN', `before/after rule not found: ${anchor}`);
  const useBefore = before !== undefined && before !== '';
  return { ok: true, value: useBefore ? idx : idx + 1 };
}

/**
 * Inserts or replaces `rule` in the ordered user rule list of one kind, honouring before/after.
 * An updated rule keeps its `enabled` state. Returns a new array; the input is not modified.
 */
export function upsertUserRule(
  rules: readonly PushRule[],
  rule: PushRule,
  opts: InsertOptions = {},
): ValidationResult<PushRule[]> {
  const pos = computeInsertionIndex(rules.map((r) => r.rule_id), rule.rule_id, opts);
  if (!pos.ok) return pos;
  const existing = rules.find((r) => r.rule_id === rule.rule_id);
  const next = rules.filter((r) => r.rule_id !== rule.rule_id);
  const stored: PushRule = { ...rule, default: false, enabled: existing ? existing.enabled : true };
  next.splice(pos.value, 0, stored);
  return { ok: true, value: next };
}
