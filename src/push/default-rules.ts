// The spec's predefined ("server-default") push rules, client-server API v1.19, "Predefined Rules".
//
// Spec history that matters here:
//  - v1.7 (MSC3952) added .m.rule.is_user_mention / .m.rule.is_room_mention and deprecated the
//    plaintext-mention rules (.m.rule.contains_display_name, .m.rule.roomnotif,
//    .m.rule.contains_user_name), which from then on only applied to events without `m.mentions`.
//  - v1.9 (MSC3958) added .m.rule.suppress_edits.
//  - v1.17 (MSC4210) removed those three legacy-mention rules entirely (and deprecated the
//    `contains_display_name` condition kind, which is still evaluated).
// So the v1.19 set has no content rules. `{ legacyMentions: true }` restores the three legacy rules
// in their pre-v1.17 positions, for deployments that still want plaintext mentions.

import type { PushAction, PushCondition, PushRule, PushRulesContent } from './rules.js';

export interface DefaultRulesetOptions {
  /** Include the pre-v1.17 legacy mention rules (removed from the spec by MSC4210). */
  legacyMentions?: boolean;
}

/** Rule IDs that are skipped for events which carry `content["m.mentions"]` (spec v1.7-v1.16). */
export const LEGACY_MENTION_RULE_IDS: ReadonlySet<string> = new Set([
  '.m.rule.contains_display_name',
  '.m.rule.roomnotif',
  '.m.rule.contains_user_name',
]);

const NOTIFY = 'notify';
const soundDefault = (): PushAction => ({ set_tweak: 'sound', value: 'default' });
const highlight = (): PushAction => ({ set_tweak: 'highlight' });

function rule(rule_id: string, conditions: PushCondition[], actions: PushAction[], enabled = true): PushRule {
  return { rule_id, default: true, enabled, conditions, actions };
}

function match(key: string, pattern: string): PushCondition {
  return { kind: 'event_match', key, pattern };
}

/** The localpart of a user ID: `@alice:example.org` -> `alice`. */
export function localpartOf(userId: string): string {
  const start = userId.startsWith('@') ? 1 : 0;
  const colon = userId.indexOf(':', start);
  return colon >= 0 ? userId.slice(start, colon) : userId.slice(start);
}

/**
 * The predefined rules for `userId`, in spec order, each with `default: true` and the spec's
 * `enabled` (everything enabled except `.m.rule.master`). Fresh objects on every call.
 */
export function defaultRuleset(userId: string, options: DefaultRulesetOptions = {}): PushRulesContent {
  const legacy = options.legacyMentions === true;

  const override: PushRule[] = [
    rule('.m.rule.master', [], [], false),
    rule('.m.rule.suppress_notices', [match('content.msgtype', 'm.notice')], []),
    rule('.m.rule.invite_for_me', [
      match('type', 'm.room.member'),
      match('content.membership', 'invite'),
      match('state_key', userId),
    ], [NOTIFY, soundDefault()]),
    rule('.m.rule.member_event', [match('type', 'm.room.member')], []),
    rule('.m.rule.is_user_mention', [
      { kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: userId },
    ], [NOTIFY, soundDefault(), highlight()]),
  ];
  if (legacy) {
    override.push(rule('.m.rule.contains_display_name', [{ kind: 'contains_display_name' }],
      [NOTIFY, soundDefault(), highlight()]));
  }
  override.push(rule('.m.rule.is_room_mention', [
    { kind: 'event_property_is', key: 'content.m\\.mentions.room', value: true },
    { kind: 'sender_notification_permission', key: 'room' },
  ], [NOTIFY, highlight()]));
  if (legacy) {
    override.push(rule('.m.rule.roomnotif', [
      match('content.body', '@room'),
      { kind: 'sender_notification_permission', key: 'room' },
    ], [NOTIFY, highlight()]));
  }
  override.push(
    rule('.m.rule.tombstone', [match('type', 'm.room.tombstone'), match('state_key', '')], [NOTIFY, highlight()]),
    rule('.m.rule.reaction', [match('type', 'm.reaction')], []),
    rule('.m.rule.room.server_acl', [match('type', 'm.room.server_acl'), match('state_key', '')], []),
    rule('.m.rule.suppress_edits', [
      { kind: 'event_property_is', key: 'content.m\\.relates_to.rel_type', value: 'm.replace' },
    ], []),
  );

  const content: PushRule[] = [];
  if (legacy) {
    content.push({
      rule_id: '.m.rule.contains_user_name',
      default: true,
      enabled: true,
      pattern: localpartOf(userId),
      actions: [NOTIFY, soundDefault(), highlight()],
    });
  }

  const underride: PushRule[] = [
    rule('.m.rule.call', [match('type', 'm.call.invite')], [NOTIFY, { set_tweak: 'sound', value: 'ring' }]),
    rule('.m.rule.encrypted_room_one_to_one', [
      { kind: 'room_member_count', is: '2' },
      match('type', 'm.room.encrypted'),
    ], [NOTIFY, soundDefault()]),
    rule('.m.rule.room_one_to_one', [
      { kind: 'room_member_count', is: '2' },
      match('type', 'm.room.message'),
    ], [NOTIFY, soundDefault()]),
    rule('.m.rule.message', [match('type', 'm.room.message')], [NOTIFY]),
    rule('.m.rule.encrypted', [match('type', 'm.room.encrypted')], [NOTIFY]),
  ];

  return { global: { override, content, room: [], sender: [], underride } };
}
