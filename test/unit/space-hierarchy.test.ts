// The spec's "Ordering of children within a space": valid `order` strings first (printable ASCII,
// at most 50 characters, compared by code point), then origin_server_ts, then room ID.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sortChildren, type ChildState } from '../../src/rooms/space-hierarchy.js';

const child = (roomId: string, ts: number, order?: unknown): ChildState => ({
  type: 'm.space.child', state_key: roomId, sender: '@a:x', origin_server_ts: ts,
  content: order === undefined ? { via: ['x'] } : { via: ['x'], order },
});

test('children with a valid order come first, by code point', () => {
  const sorted = sortChildren([child('!c:x', 1), child('!b:x', 5, 'b'), child('!a:x', 9, 'B'), child('!d:x', 0, 'a')]);
  assert.deepEqual(sorted.map((c) => c.state_key), ['!a:x', '!d:x', '!b:x', '!c:x']);
});

test('invalid orders (too long, non-ASCII, not a string) count as none', () => {
  const sorted = sortChildren([
    child('!long:x', 1, 'x'.repeat(51)), child('!uni:x', 2, 'é'), child('!num:x', 3, 5), child('!ok:x', 4, 'z'.repeat(50)),
  ]);
  assert.deepEqual(sorted.map((c) => c.state_key), ['!ok:x', '!long:x', '!uni:x', '!num:x']);
});

test('equal or absent orders fall back to origin_server_ts, then room ID', () => {
  const sorted = sortChildren([child('!b:x', 2, 'same'), child('!a:x', 2, 'same'), child('!z:x', 1, 'same'), child('!y:x', 1), child('!w:x', 1)]);
  assert.deepEqual(sorted.map((c) => c.state_key), ['!z:x', '!a:x', '!b:x', '!w:x', '!y:x']);
});
