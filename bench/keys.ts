// E2EE key endpoints: POST /keys/query for U users (default 1,000) with D devices each (default 3),
// every device's keys uploaded through POST /keys/upload with a valid Ed25519 self-signature; and
// POST /keys/claim of one one-time key from each of C devices (default 100), each of which uploaded
// signed one-time keys. Users and devices are created in-process (no password hashing), the
// uploads and the timed requests go over HTTP to a separate server process (dist/).
//
//   node --import tsx bench/keys.ts [users=1000] [devicesPerUser=3] [claimDevices=100] [runs=5]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/keys.ts
//
// Goals: /keys/query 1,000 × 3 < 200 ms; /keys/claim 100 < 100 ms.
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import { encodeBase64 } from '../src/crypto/base64.js';
import { signJson, signingKeyFromSeed } from '../src/crypto/signing.js';
import {
  call, loadProbe, createUser, freshDatabase, header, mapLimit, median, ms, kb, printProfile, printQueries, startInProcess, startServerProcess,
  table, verdict, waitIdle, type BenchUser,
} from './lib.js';

const users = Number(process.argv[2] ?? 1000);
const perUser = Number(process.argv[3] ?? 3);
const claimCount = Number(process.argv[4] ?? 100);
const runs = Number(process.argv[5] ?? 5);
const OTKS = runs + 3;

await header(`E2EE keys: /keys/query ${users} users × ${perUser} devices, /keys/claim ${claimCount} devices`, [
  'first = first request after the uploads; median over the following runs (each /keys/claim run takes a fresh one-time key per device)',
]);

function deviceKeys(d: BenchUser) {
  const key = signingKeyFromSeed(`ed25519:${d.device_id}`, randomBytes(32));
  const keys = signJson({
    user_id: d.user_id, device_id: d.device_id, algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`curve25519:${d.device_id}`]: encodeBase64(randomBytes(32)), [`ed25519:${d.device_id}`]: encodeBase64(key.publicKey) },
  }, d.user_id, key);
  const otks = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`signed_curve25519:AAAA${i}`, signJson({ key: encodeBase64(randomBytes(32)) }, d.user_id, key)]));
  return { keys, otks };
}

const db = await freshDatabase();
try {
  let t = performance.now();
  const devices: BenchUser[] = [];
  let querier: BenchUser;
  {
    const prep = await startInProcess(db);
    try {
      querier = await createUser(prep, 'querier');
      for (let u = 0; u < users; u++) {
        const first = await createUser(prep, `k${u}`);
        devices.push(first);
        for (let d = 1; d < perUser; d++) {
          const login = await prep.hs.services.accounts.login(first.user_id);
          devices.push({ user_id: first.user_id, device_id: login.device_id, access_token: login.access_token });
        }
      }
    } finally {
      await prep.stop();
    }
  }
  console.log(`set-up: ${users} users, ${devices.length} devices in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const srv = await startServerProcess({ databaseUrl: db.url, control: true });
  const pool = new Pool(srv.url, { connections: 16 });
  try {
    t = performance.now();
    await mapLimit(devices, 16, async (d, i) => {
      const k = deviceKeys(d);
      const body: Record<string, unknown> = { device_keys: k.keys };
      if (i < claimCount) body.one_time_keys = k.otks(OTKS);
      await call(pool, 'POST', '/_matrix/client/v3/keys/upload', d.access_token, body);
    });
    const uploadSec = (performance.now() - t) / 1000;
    console.log(`uploads: ${devices.length} device keys (+${OTKS} one-time keys on ${claimCount} devices) in ${uploadSec.toFixed(1)} s, ${(devices.length / uploadSec).toFixed(0)}/s with 16 clients`);
    await waitIdle(srv.pid, 300);

    const userIds = [...new Set(devices.map((d) => d.user_id))];
    const queryBody = { device_keys: Object.fromEntries(userIds.map((u) => [u, []])) };
    const claimBody = { one_time_keys: {} as Record<string, Record<string, string>> };
    for (const d of devices.slice(0, claimCount)) (claimBody.one_time_keys[d.user_id] ??= {})[d.device_id] = 'signed_curve25519';

    const timed = async (p: string, body: unknown) => {
      const t0 = performance.now();
      const res = await pool.request({ method: 'POST', path: p, headers: { authorization: `Bearer ${querier!.access_token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const text = await res.body.text();
      const elapsed = performance.now() - t0;
      if (res.statusCode !== 200) throw new Error(`${p} ${res.statusCode} ${text.slice(0, 200)}`);
      return { elapsed, text, json: JSON.parse(text) };
    };
    const rows: string[][] = [];

    const probe = loadProbe([srv.pid]);
    // /keys/query
    await srv.control('queries-reset');
    const q1 = await timed('/_matrix/client/v3/keys/query', queryBody);
    const got = Object.values(q1.json.device_keys as Record<string, Record<string, unknown>>).reduce((n, m) => n + Object.keys(m).length, 0);
    if (got !== devices.length) throw new Error(`/keys/query returned ${got} devices, expected ${devices.length}`);
    const qq = await srv.control('queries 10');
    await srv.profileStart();
    const qTimes: number[] = [];
    for (let i = 0; i < runs; i++) qTimes.push((await timed('/_matrix/client/v3/keys/query', queryBody)).elapsed);
    const qProfile = await srv.profileStop('keys-query');
    const qm = median(qTimes);
    rows.push([`/keys/query ${users} users × ${perUser} devices`, ms(q1.elapsed), ms(qm), kb(q1.text.length, 0), String(qq.total), `< 200 ms: ${verdict(qm < 200)}`]);

    // /keys/claim
    await srv.control('queries-reset');
    const c1 = await timed('/_matrix/client/v3/keys/claim', claimBody);
    const claimed = Object.values(c1.json.one_time_keys as Record<string, Record<string, unknown>>).reduce((n, m) => n + Object.keys(m).length, 0);
    if (claimed !== claimCount) throw new Error(`/keys/claim returned ${claimed} keys, expected ${claimCount}`);
    const cq = await srv.control('queries 10');
    await srv.profileStart();
    const cTimes: number[] = [];
    for (let i = 0; i < runs; i++) cTimes.push((await timed('/_matrix/client/v3/keys/claim', claimBody)).elapsed);
    const cProfile = await srv.profileStop('keys-claim');
    const cm = median(cTimes);
    rows.push([`/keys/claim ${claimCount} devices`, ms(c1.elapsed), ms(cm), kb(c1.text.length, 0), String(cq.total), `< 100 ms: ${verdict(cm < 100)}`]);

    console.log(probe.end());
    table(['request', 'first', `median of ${runs}`, 'response', 'db queries (first)', 'goal'], rows);
    printQueries(qq, 1, '/keys/query');
    printQueries(cq, 1, '/keys/claim');
    printProfile(qProfile, `server during ${runs} × /keys/query`);
    printProfile(cProfile, `server during ${runs} × /keys/claim`);
  } finally {
    await pool.close();
    await srv.stop();
  }
} finally {
  await db.drop();
}
