// Pagination tokens of /messages: `t<depth>_<stream>` marks a point in topological order. Stream
// tokens from /sync (`s<events>_...`) are accepted too: their first number is the events position.
import { MatrixError } from '../http/errors.js';

export type PagePoint = { kind: 'topo'; depth: number; stream: number } | { kind: 'stream'; stream: number };

export function topoToken(depth: number, stream: number): string {
  return `t${depth}_${stream}`;
}

export function parsePageToken(token: string): PagePoint {
  let m = /^t(-?\d+)_(-?\d+)$/.exec(token);
  if (m) return { kind: 'topo', depth: Number(m[1]), stream: Number(m[2]) };
  m = /^s(\d+)(?:_|$)/.exec(token);
  if (m) return { kind: 'stream', stream: Number(m[1]) };
  throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid pagination token');
}
