// Canonical JSON (spec appendix "Canonical JSON"): keys sorted by code point, no insignificant
// whitespace, UTF-8 kept as is, integers only in [-(2^53)+1, 2^53-1].

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export class CanonicalJsonError extends Error {}

function compareCodePoints(a: string, b: string): number {
  // JS string comparison orders by UTF-16 code unit, which differs from code point order only when
  // a surrogate pair meets a BMP character at or above U+E000; fall back to a code point walk then.
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x < 0xd800 && y < 0xd800) return x - y;
    return (a.codePointAt(i) ?? 0) - (b.codePointAt(i) ?? 0);
  }
  return a.length - b.length;
}

function encode(value: unknown, out: string[], strict: boolean): void {
  if (value === null) { out.push('null'); return; }
  switch (typeof value) {
    case 'boolean': out.push(value ? 'true' : 'false'); return;
    case 'string': out.push(JSON.stringify(value)); return;
    case 'number': {
      if (!Number.isFinite(value)) throw new CanonicalJsonError('non-finite number');
      if (strict && (!Number.isInteger(value) || !Number.isSafeInteger(value))) {
        throw new CanonicalJsonError(`number out of canonical range: ${value}`);
      }
      out.push(Object.is(value, -0) ? '0' : String(value));
      return;
    }
    case 'object': {
      if (Array.isArray(value)) {
        out.push('[');
        for (let i = 0; i < value.length; i++) {
          if (i) out.push(',');
          encode(value[i], out, strict);
        }
        out.push(']');
        return;
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort(compareCodePoints);
      out.push('{');
      for (let i = 0; i < keys.length; i++) {
        if (i) out.push(',');
        out.push(JSON.stringify(keys[i]), ':');
        encode(obj[keys[i]], out, strict);
      }
      out.push('}');
      return;
    }
    default:
      throw new CanonicalJsonError(`cannot encode ${typeof value}`);
  }
}

/**
 * Encodes a value as canonical JSON. With `strict` (the default) non-integers and integers outside
 * the safe range are rejected, as room versions 6+ and all signed JSON require.
 */
export function canonicalJson(value: unknown, strict = true): string {
  const out: string[] = [];
  encode(value, out, strict);
  return out.join('');
}
