// Unpadded Base64 (spec appendix "Unpadded Base64"), standard and URL-safe alphabets.

export function encodeBase64(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64').replace(/=+$/, '');
}

export function encodeBase64Url(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64url');
}

/** Decodes padded or unpadded, standard or URL-safe base64. Throws on characters outside both alphabets. */
export function decodeBase64(text: string): Buffer {
  if (!/^[A-Za-z0-9+/\-_]*={0,2}$/.test(text)) throw new Error('invalid base64');
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}
