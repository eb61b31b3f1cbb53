import { test } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import { canonicalJson, CanonicalJsonError } from '../../src/crypto/canonical-json.js';
import { encodeBase64, decodeBase64, encodeBase64Url } from '../../src/crypto/base64.js';
import { signingKeyFromSeed, signJson, verifyJsonSignature, signingPayload, generateSigningKey, signBytes, verifyBytes } from '../../src/crypto/signing.js';
import { testVectors } from '../spec.js';

const vectors = testVectors();

test('unpadded base64 matches the spec vectors', () => {
  for (const v of vectors.unpadded_base64) {
    assert.equal(encodeBase64(Buffer.from(v.input_utf8, 'utf8')), v.expected);
    assert.equal(decodeBase64(v.expected).toString('utf8'), v.input_utf8);
  }
  assert.equal(encodeBase64Url(Buffer.from([0xfb, 0xff])), '-_8');
  assert.deepEqual([...decodeBase64('-_8')], [0xfb, 0xff]);
  assert.throws(() => decodeBase64('a$b'));
});

test('canonical JSON reproduces the spec examples byte for byte', () => {
  assert.ok(vectors.canonical_json.length >= 10);
  for (const v of vectors.canonical_json) {
    assert.equal(canonicalJson(JSON.parse(v.input)), v.expected, `vector at spec line ${v.source_line}`);
  }
});

test('canonical JSON rejects floats and out-of-range integers, orders by code point', () => {
  assert.throws(() => canonicalJson({ a: 1.5 }), CanonicalJsonError);
  assert.throws(() => canonicalJson({ a: 2 ** 53 }), CanonicalJsonError);
  assert.equal(canonicalJson({ a: 1.5 }, false), '{"a":1.5}');
  // U+FF61 sorts before U+1F600 by code point, but after it by UTF-16 code unit.
  assert.equal(canonicalJson({ '\u{1F600}': 1, '\uFF61': 2 }), '{"\uFF61":2,"\u{1F600}":1}');
  assert.equal(canonicalJson({ s: '\u0001\n"\\' }), '{"s":"\\u0001\\n\\"\\\\"}');
});

test('JSON signing reproduces the spec vectors, cross-checked with tweetnacl', () => {
  const { key, json } = vectors.signing;
  const seed = decodeBase64(key.seed_base64);
  const signing = signingKeyFromSeed(key.key_id, seed);
  const naclPair = nacl.sign.keyPair.fromSeed(seed);
  assert.equal(encodeBase64(signing.publicKey), encodeBase64(naclPair.publicKey));
  for (const v of json) {
    const signed = signJson(v.input, key.server_name, signing);
    assert.equal(canonicalJson(signed), canonicalJson(v.expected_signed));
    const sig = v.expected_signed.signatures[key.server_name][key.key_id];
    // tweetnacl, the independent oracle, signs the same bytes to the same signature.
    const naclSig = nacl.sign.detached(Buffer.from(signingPayload(v.input)), naclPair.secretKey);
    assert.equal(encodeBase64(naclSig), sig);
    assert.ok(verifyJsonSignature(signed, key.server_name, key.key_id, encodeBase64(signing.publicKey)));
  }
});

test('verification fails for tampered content, wrong keys and malformed signatures', () => {
  const k = generateSigningKey();
  const other = generateSigningKey();
  const signed = signJson({ a: 1 }, 'hs', k);
  const pub = encodeBase64(k.publicKey);
  assert.ok(verifyJsonSignature(signed, 'hs', k.keyId, pub));
  assert.equal(verifyJsonSignature({ ...signed, a: 2 }, 'hs', k.keyId, pub), false);
  assert.equal(verifyJsonSignature(signed, 'hs', k.keyId, encodeBase64(other.publicKey)), false);
  assert.equal(verifyJsonSignature(signed, 'other', k.keyId, pub), false);
  assert.equal(verifyBytes(pub, 'x', 'not base64!'), false);
  assert.equal(verifyBytes('short', 'x', signBytes(k, 'x')), false);
  // Signatures verify with tweetnacl too.
  const sig = decodeBase64(signBytes(k, 'hello'));
  assert.ok(nacl.sign.detached.verify(Buffer.from('hello'), sig, k.publicKey));
  assert.match(k.keyId, /^ed25519:[A-Za-z0-9_]+$/);
});
