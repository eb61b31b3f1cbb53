// Filters (spec: "Filtering"): stored per user, or inline JSON on /sync.
import type { ValidateFunction } from 'ajv';
import { compile, check } from '../http/validate.js';
import { MatrixError } from '../http/errors.js';

export interface EventFilter {
  limit?: number;
  types?: string[];
  not_types?: string[];
  senders?: string[];
  not_senders?: string[];
}

export interface RoomEventFilter extends EventFilter {
  rooms?: string[];
  not_rooms?: string[];
  contains_url?: boolean;
  lazy_load_members?: boolean;
  include_redundant_members?: boolean;
  unread_thread_notifications?: boolean;
}

export interface Filter {
  event_fields?: string[];
  event_format?: 'client' | 'federation';
  presence?: EventFilter;
  account_data?: EventFilter;
  room?: {
    rooms?: string[];
    not_rooms?: string[];
    include_leave?: boolean;
    ephemeral?: RoomEventFilter;
    state?: RoomEventFilter;
    timeline?: RoomEventFilter;
    account_data?: RoomEventFilter;
  };
}

const strings = { type: 'array', items: { type: 'string' } };
const eventFilter = {
  type: 'object',
  properties: { limit: { type: 'integer', minimum: 0 }, types: strings, not_types: strings, senders: strings, not_senders: strings },
};
const roomEventFilter = {
  type: 'object',
  properties: {
    ...eventFilter.properties,
    rooms: strings,
    not_rooms: strings,
    contains_url: { type: 'boolean' },
    lazy_load_members: { type: 'boolean' },
    include_redundant_members: { type: 'boolean' },
    unread_thread_notifications: { type: 'boolean' },
  },
};
export const FilterSchema = {
  type: 'object',
  properties: {
    event_fields: strings,
    event_format: { enum: ['client', 'federation'] },
    presence: eventFilter,
    account_data: eventFilter,
    room: {
      type: 'object',
      properties: {
        rooms: strings,
        not_rooms: strings,
        include_leave: { type: 'boolean' },
        ephemeral: roomEventFilter,
        state: roomEventFilter,
        timeline: roomEventFilter,
        account_data: roomEventFilter,
      },
    },
  },
};

export const validateFilter: ValidateFunction<Filter> = compile<Filter>(FilterSchema);

export function parseInlineFilter(raw: string): Filter {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new MatrixError(400, 'M_NOT_JSON', 'filter is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new MatrixError(400, 'M_BAD_JSON', 'filter must be an object');
  return check(validateFilter, parsed);
}

function glob(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  return new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(value);
}

/** Whether an event (type, sender, content) passes an EventFilter/RoomEventFilter. */
export function passesFilter(f: RoomEventFilter | undefined, ev: { type: string; sender?: string; content?: Record<string, unknown> }): boolean {
  if (!f) return true;
  if (f.not_types?.some((p) => glob(p, ev.type))) return false;
  if (f.types && !f.types.some((p) => glob(p, ev.type))) return false;
  if (ev.sender !== undefined) {
    if (f.not_senders?.includes(ev.sender)) return false;
    if (f.senders && !f.senders.includes(ev.sender)) return false;
  }
  if (f.contains_url !== undefined && ev.content) {
    if ((typeof ev.content.url === 'string') !== f.contains_url) return false;
  }
  return true;
}

export function roomAllowed(f: { rooms?: string[]; not_rooms?: string[] } | undefined, roomId: string): boolean {
  if (!f) return true;
  if (f.not_rooms?.includes(roomId)) return false;
  if (f.rooms && !f.rooms.includes(roomId)) return false;
  return true;
}

/** Applies `event_fields` (dotted paths, `\.` escapes) to a client event. */
export function applyEventFields(ev: Record<string, unknown>, fields: readonly string[] | undefined): Record<string, unknown> {
  if (!fields) return ev;
  const out: Record<string, unknown> = {};
  for (const field of fields) {
    const path = field.split(/(?<!\\)\./).map((p) => p.replace(/\\\./g, '.'));
    let src: unknown = ev;
    for (const p of path) src = src && typeof src === 'object' ? (src as Record<string, unknown>)[p] : undefined;
    if (src === undefined) continue;
    let dst = out;
    for (let i = 0; i < path.length - 1; i++) {
      const next = dst[path[i]];
      dst = (dst[path[i]] = next && typeof next === 'object' ? next : {}) as Record<string, unknown>;
    }
    dst[path[path.length - 1]] = src;
  }
  return out;
}
