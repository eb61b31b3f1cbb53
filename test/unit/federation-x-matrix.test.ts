// X-Matrix header building, parsing (spec "Request Authentication": RFC 7235 parameters, quoting,
// escapes, compatibility rules) and request signature verification.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import { formatXMatrix, parseXMatrix, requestSigningPayload, signRequest, verifyRequestSignature } from '../../src/federation/x-matrix.js';
import { decodeBase64, encodeBase64 } from '../../src/crypto/base64.js';
import { generateSigningKey, signingKeyFromSeed } from '../../src/crypto/signing.js';
import { testVectors } from '../spec.js';

test('parses the header as the spec shows it', () => {
  const h = 'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."';
  assert.deepEqual(parseXMatrix(h), { origin: 'origin.hs.example.com', destination: 'destination.hs.example.com', key: 'ed25519:key1', sig: 'ABCDEF...' });
});

test('parameter syntax: unquoted tokens, colons, case, spaces, order, escapes, unknown names', () => {
  // Older servers send unquoted values with colons; the recipient should allow them.
  assert.deepEqual(parseXMatrix('X-Matrix origin=hs.example:8448,key=ed25519:abc,sig=c2ln'), { origin: 'hs.example:8448', key: 'ed25519:abc', sig: 'c2ln' });
  // Scheme and names are case-insensitive; several spaces after the scheme; whitespace around commas
  // and equals; any order.
  assert.deepEqual(parseXMatrix('x-matrix   SIG="s" , Key = "ed25519:k",ORIGIN="o.example" ,Destination="d.example"'), {
    origin: 'o.example', destination: 'd.example', key: 'ed25519:k', sig: 's',
  });
  // A backslash-character pair is replaced by the character.
  assert.equal(parseXMatrix('X-Matrix origin="a\\"b\\\\c\\d",key="ed25519:k",sig="s"')?.origin, 'a"b\\cd');
  // Commas inside quoted values are values, not separators.
  assert.equal(parseXMatrix('X-Matrix origin="a,b",key="ed25519:k",sig="s"')?.origin, 'a,b');
  // Unknown parameters are ignored; empty list elements are allowed by RFC 7230's list rule.
  assert.deepEqual(parseXMatrix('X-Matrix origin=o,,foo="bar",key=ed25519:k,sig=s'), { origin: 'o', key: 'ed25519:k', sig: 's' });
});

test('malformed headers are refused', () => {
  for (const h of [
    '',
    'Bearer abc',
    'X-Matrixorigin=o,key=k,sig=s',
    'X-Matrix origin="o",key="ed25519:k"', // no sig
    'X-Matrix key="ed25519:k",sig="s"', // no origin
    'X-Matrix origin="o,key="ed25519:k",sig="s"', // unterminated quote swallows the rest
    'X-Matrix origin="o" key="ed25519:k",sig="s"', // missing comma
    'X-Matrix origin=,key="ed25519:k",sig="s"', // empty unquoted value
    'X-Matrix origin="o",origin="p",key="ed25519:k",sig="s"', // repeated parameter
    'X-Matrix =o,key="ed25519:k",sig="s"',
    'X-Matrix origin="o\\',
  ]) assert.equal(parseXMatrix(h), undefined, h);
});

test('format puts one space after the scheme, lower-case names, quoted values; parse reads it back', () => {
  const p = { origin: 'a.example', destination: 'b.example:8448', key: 'ed25519:k1', sig: 'abc+/def' };
  const h = formatXMatrix(p);
  assert.equal(h, 'X-Matrix origin="a.example",destination="b.example:8448",key="ed25519:k1",sig="abc+/def"');
  assert.deepEqual(parseXMatrix(h), p);
  const odd = { origin: 'we"ird\\', key: 'ed25519:k', sig: 's' };
  assert.deepEqual(parseXMatrix(formatXMatrix(odd)), odd);
});

test('signing covers method, uri, origin, destination and content; cross-checked with tweetnacl', () => {
  const { key } = testVectors().signing;
  const seed = decodeBase64(key.seed_base64);
  const k = signingKeyFromSeed(key.key_id, seed);
  const req = { method: 'PUT', uri: '/_matrix/federation/v1/send/txn1?x=1', origin: 'origin.hs.example.com', destination: 'destination.hs.example.com', content: { pdus: [], edus: [] } };
  assert.equal(requestSigningPayload(req),
    '{"content":{"edus":[],"pdus":[]},"destination":"destination.hs.example.com","method":"PUT","origin":"origin.hs.example.com","uri":"/_matrix/federation/v1/send/txn1?x=1"}');
  const header = signRequest(req, k);
  const parsed = parseXMatrix(header)!;
  assert.equal(parsed.origin, req.origin);
  assert.equal(parsed.destination, req.destination);
  assert.equal(parsed.key, key.key_id);
  const expected = encodeBase64(nacl.sign.detached(Buffer.from(requestSigningPayload(req)), nacl.sign.keyPair.fromSeed(seed).secretKey));
  assert.equal(parsed.sig, expected);
  const pub = encodeBase64(k.publicKey);
  assert.ok(verifyRequestSignature(req, parsed.sig, pub));
  // Any change to a signed field breaks it.
  assert.equal(verifyRequestSignature({ ...req, method: 'POST' }, parsed.sig, pub), false);
  assert.equal(verifyRequestSignature({ ...req, uri: '/_matrix/federation/v1/send/txn2?x=1' }, parsed.sig, pub), false);
  assert.equal(verifyRequestSignature({ ...req, destination: 'other.example' }, parsed.sig, pub), false);
  assert.equal(verifyRequestSignature({ ...req, origin: 'evil.example' }, parsed.sig, pub), false);
  assert.equal(verifyRequestSignature({ ...req, content: { pdus: [1], edus: [] } }, parsed.sig, pub), false);
  assert.equal(verifyRequestSignature({ ...req, content: undefined }, parsed.sig, pub), false);
  assert.equal(verifyRequestSignature(req, parsed.sig, encodeBase64(generateSigningKey().publicKey)), false);
  assert.equal(verifyRequestSignature(req, 'not-a-signature', pub), false);
});

test('requests without a body sign no content key; method is upper-cased', () => {
  const k = generateSigningKey();
  const get = { method: 'get', uri: '/_matrix/federation/v1/version', origin: 'a', destination: 'b' };
  assert.equal(requestSigningPayload(get), '{"destination":"b","method":"GET","origin":"a","uri":"/_matrix/federation/v1/version"}');
  const sig = parseXMatrix(signRequest(get, k))!.sig;
  assert.ok(verifyRequestSignature({ ...get, method: 'GET' }, sig, encodeBase64(k.publicKey)));
});
